"""cdiflow.pipelines."""
