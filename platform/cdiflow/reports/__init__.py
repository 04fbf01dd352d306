"""cdiflow.reports."""
