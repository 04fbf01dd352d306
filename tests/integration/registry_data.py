"""Tiny data sets for the training / registry tests (a module, so tests can import it)."""

from __future__ import annotations

from pathlib import Path


def write_tiny_dataset(
    root: Path, num_patterns: int, test_patterns: int, seed: int = 0, fault=None
):
    """A complete data set (shards + manifest) in the project's format, without Ray.

    ``fault(split, chunks) -> chunks`` may alter the generated samples before they are
    written (the manifest then describes the altered files, as a buggy generator would).
    """
    from cdiflow.formats.dataset_folder import write_dataset
    from cdiflow.formats.layout import DatasetConfig

    config = DatasetConfig(
        seed=seed, num_patterns=num_patterns, test_patterns=test_patterns, shards=2, chunk_size=32
    )
    wrap = None if fault is None else (lambda spec, chunks: fault(spec.split, chunks))
    write_dataset(root, config, fault=wrap)
    return root
