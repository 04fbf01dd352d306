"""Finding, checking and reading the Parquet shards that training and evaluation use.

The format belongs to ``cdiflow.formats.dataset`` (layout ``DIR/manifest.json`` +
``DIR/{train,val,test}/shard-NNNNN.parquet``, ``fixed_shape_tensor`` columns); this module
only adapts it to what the Ray driver and ``cdiflow evaluate`` need. Validation runs
before any training and raises ``DatasetError`` naming the file and the column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cdiflow.errors import DatasetError

TENSOR_COLUMNS = ("modulus", "amplitude", "phase")


def list_shards(root: str | Path, split: str) -> list[Path]:
    """The split's shard files in order; ``DatasetError`` when there are none."""
    from cdiflow.formats.dataset import list_shards as shards_of

    shards = shards_of(root, split)
    if not shards:
        raise DatasetError(f"{Path(root) / split}: no shards")
    return shards


def validate_split(root: str | Path, split: str) -> int:
    """Check the split fully (manifest, schema, checksums, no NaN/inf); return its rows."""
    from cdiflow.formats.dataset import validate_split as validate

    rows = validate(root, split).count(split)
    if rows == 0:
        raise DatasetError(f"{Path(root) / split}: the split is empty")
    return rows


def read_split_arrays(
    root: str | Path, split: str, limit: int | None = None
) -> dict[str, np.ndarray]:
    """The split's tensor columns as float32 arrays, (rows, P, P) / (rows, N, N), in order.

    Reads with plain pyarrow (evaluation is one process); stops after ``limit`` rows.
    """
    from cdiflow.formats.dataset import read_shard

    parts: dict[str, list[np.ndarray]] = {name: [] for name in TENSOR_COLUMNS}
    rows = 0
    for shard in list_shards(root, split):
        arrays = read_shard(shard)
        for name in TENSOR_COLUMNS:
            parts[name].append(arrays[name])
        rows += len(arrays["modulus"])
        if limit is not None and rows >= limit:
            break
    arrays = {k: np.concatenate(v).astype(np.float32, copy=False) for k, v in parts.items()}
    if limit is not None:
        arrays = {k: v[:limit] for k, v in arrays.items()}
    return arrays
