"""cdiflow.train."""
