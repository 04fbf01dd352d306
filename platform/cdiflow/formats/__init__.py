"""cdiflow.formats."""
