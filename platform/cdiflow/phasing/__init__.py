"""cdiflow.phasing."""
