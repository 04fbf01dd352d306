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
    from cdiflow.formats.dataset import Manifest, generate_shard, write_manifest
    from cdiflow.formats.layout import SPLITS, DatasetConfig

    config = DatasetConfig(
        seed=seed, num_patterns=num_patterns, test_patterns=test_patterns, shards=2, chunk_size=32
    )
    infos = {}
    for spec in config.shard_specs():
        (root / spec.split).mkdir(parents=True, exist_ok=True)
        wrap = None if fault is None else (lambda chunks, split=spec.split: fault(split, chunks))
        infos[spec.relpath] = generate_shard(root, config, spec, fault=wrap)
    shards = {
        split: tuple(infos[s.relpath] for s in config.shard_specs() if s.split == split)
        for split in SPLITS
    }
    write_manifest(root, Manifest(config.resolved(), shards, "test"))
    return root
