"""cdiflow.models."""
