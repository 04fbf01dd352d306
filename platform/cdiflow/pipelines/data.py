"""Finding, checking and reading the Parquet shards that training and evaluation use.

The format belongs to ``cdiflow.formats.dataset`` (layout ``DIR/manifest.json`` +
``DIR/{train,val,test}/shard-NNNNN.parquet``, ``fixed_shape_tensor`` columns); this module
only adapts it to what the Ray driver and ``cdiflow evaluate`` need. Validation runs
before any training and raises ``DatasetError`` naming the file and the column. A data set
root may be a local folder or an object-storage URI (``cdiflow.formats.location``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cdiflow.errors import DatasetError
from cdiflow.formats.location import Location

TENSOR_COLUMNS = ("modulus", "amplitude", "phase")
MASK_COLUMN = "mask"  # (P, P) uint8, 1 = measured; only in masked data sets (realistic preset)


def has_mask(paths: list[str | Path]) -> bool:
    """Whether the shards carry a ``mask`` column (read from the first shard's footer)."""
    # lazy: torch, pyarrow; the Ray driver code (pipelines.train, tune) stays torch-free
    from cdiflow.formats.dataset import shard_metadata

    schema, _rows, _identity = shard_metadata(paths[0])
    return MASK_COLUMN in schema.names


def list_shards(root: str | Path | Location, split: str) -> list[Path | str]:
    """The split's shard files in order (URIs for object storage); ``DatasetError`` if none."""
    # lazy: torch, pyarrow; the Ray driver code (pipelines.train, tune) stays torch-free
    from cdiflow.formats.dataset import list_shards as shards_of

    shards = shards_of(root, split)
    if not shards:
        raise DatasetError(f"{Location.parse(root) / split}: no shards")
    return shards


def validate_split(root: str | Path | Location, split: str) -> int:
    """Check the split fully (manifest, schema, checksums, no NaN/inf); return its rows."""
    # lazy: torch, pyarrow; the Ray driver code (pipelines.train, tune) stays torch-free
    from cdiflow.formats.dataset import validate_split as validate

    rows = validate(root, split).count(split)
    if rows == 0:
        raise DatasetError(f"{Location.parse(root) / split}: the split is empty")
    return rows


def read_split_arrays(
    root: str | Path | Location, split: str, limit: int | None = None
) -> dict[str, np.ndarray]:
    """The split's tensor columns as float32 arrays, (rows, P, P) / (rows, N, N), in order.

    ``mask`` (rows, P, P), 1.0 = measured, is there when the shards have one. Reads with
    plain pyarrow (evaluation is one process); stops after ``limit`` rows.
    """
    # lazy: torch, pyarrow; the Ray driver code (pipelines.train, tune) stays torch-free
    from cdiflow.formats.dataset import read_shard, shard_locations

    shards = shard_locations(root, split)
    if not shards:
        raise DatasetError(f"{Location.parse(root) / split}: no shards")
    parts: dict[str, list[np.ndarray]] = {}
    rows = 0
    for shard in shards:
        arrays = read_shard(shard)
        for name in (*TENSOR_COLUMNS, MASK_COLUMN):
            if name in arrays:
                parts.setdefault(name, []).append(arrays[name])
        rows += len(arrays["modulus"])
        if limit is not None and rows >= limit:
            break
    arrays = {k: np.concatenate(v).astype(np.float32, copy=False) for k, v in parts.items()}
    if limit is not None:
        arrays = {k: v[:limit] for k, v in arrays.items()}
    return arrays


def read_parquet_dataset(paths: list[str | Path], **read_args):
    """``ray.data.read_parquet`` over shard files: local paths or object-storage URIs.

    URIs are read through their ``pyarrow.fs`` filesystem (``filesystem=``), so options in
    a URI's query (``?endpoint_override=...``) reach Ray's read tasks; every node needs the
    storage's credentials in its environment. ``read_args`` go to ``read_parquet``.
    """
    import ray.data

    locations = [Location.parse(p) for p in paths]
    if all(location.is_local for location in locations):
        return ray.data.read_parquet([str(p) for p in locations], **read_args)
    if any(location.is_local for location in locations):
        raise DatasetError("a split's shards are either all local or all in object storage")
    folders: dict[str | Path, Location] = {}  # one filesystem per folder, not per shard
    shards = [folders.setdefault(p.parent.value, p.parent) / p.name for p in locations]
    return ray.data.read_parquet(
        [shard.fs_path for shard in shards], filesystem=shards[0].filesystem, **read_args
    )
