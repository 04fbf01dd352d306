"""Finding and checking the Parquet shards that training reads (before any training starts).

The dataset layout is ``DIR/manifest.json`` + ``DIR/{train,val,test}/shard-NNNNN.parquet``
with ``fixed_shape_tensor`` columns ``modulus`` (P x P), ``amplitude`` and ``phase``
(N x N), float32. ``cdiflow.formats.dataset`` owns the format; when it is installed its
``list_shards`` / ``validate_split`` are used, otherwise the minimal checks here apply
(same layout, same error type).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cdiflow import OBJECT_SIZE, PATTERN_SIZE
from cdiflow.errors import DatasetError

TENSOR_COLUMNS = {
    "modulus": (PATTERN_SIZE, PATTERN_SIZE),
    "amplitude": (OBJECT_SIZE, OBJECT_SIZE),
    "phase": (OBJECT_SIZE, OBJECT_SIZE),
}


def _format_module():
    try:
        from cdiflow.formats import dataset
    except ImportError:
        return None
    if hasattr(dataset, "list_shards") and hasattr(dataset, "validate_split"):
        return dataset
    return None


def list_shards(root: str | Path, split: str) -> list[Path]:
    """The split's shard files in order; ``DatasetError`` when there are none."""
    fmt = _format_module()
    if fmt is not None:
        return [Path(p) for p in fmt.list_shards(root, split)]
    folder = Path(root) / split
    shards = sorted(folder.glob("shard-*.parquet"))
    if not shards:
        raise DatasetError(f"{folder}: no shard-*.parquet files (is {root} a cdiflow dataset?)")
    return shards


def validate_split(root: str | Path, split: str) -> int:
    """Check every shard of a split (columns, shapes, float32, finite); return its row count.

    Raises ``DatasetError`` naming the file and the column.
    """
    fmt = _format_module()
    if fmt is not None:
        result = fmt.validate_split(root, split)
        if isinstance(result, int):
            return result
    rows = 0
    for shard in list_shards(root, split):
        rows += _check_shard(shard)
    return rows


def _check_shard(path: Path) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path, columns=list(TENSOR_COLUMNS))
    except (pa.ArrowInvalid, OSError, KeyError) as exc:
        if "No match for FieldRef" in str(exc) or isinstance(exc, KeyError):
            names = pq.read_schema(path).names
            missing = [c for c in TENSOR_COLUMNS if c not in names]
            raise DatasetError(f"{path}: missing column(s) {missing}") from None
        raise DatasetError(f"{path}: unreadable Parquet ({exc})") from None
    for name, shape in TENSOR_COLUMNS.items():
        column = table.column(name).combine_chunks()
        if not isinstance(column.type, pa.FixedShapeTensorType):
            raise DatasetError(
                f"{path}: column {name!r} is {column.type}, expected fixed_shape_tensor {shape}"
            )
        if tuple(column.type.shape) != shape:
            raise DatasetError(
                f"{path}: column {name!r} has shape {tuple(column.type.shape)}, expected {shape}"
            )
        values = column.to_numpy_ndarray()
        if values.dtype != np.float32:
            raise DatasetError(f"{path}: column {name!r} is {values.dtype}, expected float32")
        if not np.isfinite(values).all():
            bad = int((~np.isfinite(values)).any(axis=(1, 2)).sum())
            raise DatasetError(f"{path}: column {name!r} has NaN/inf in {bad} row(s)")
    return table.num_rows


def read_split_arrays(
    root: str | Path, split: str, limit: int | None = None
) -> dict[str, np.ndarray]:
    """The split's tensor columns as float32 arrays, (rows, P, P) / (rows, N, N), in order.

    Reads with plain pyarrow (evaluation is one process); stops after ``limit`` rows.
    """
    import pyarrow.parquet as pq

    parts: dict[str, list[np.ndarray]] = {name: [] for name in TENSOR_COLUMNS}
    rows = 0
    for shard in list_shards(root, split):
        table = pq.read_table(shard, columns=list(TENSOR_COLUMNS))
        for name in TENSOR_COLUMNS:
            parts[name].append(table.column(name).combine_chunks().to_numpy_ndarray())
        rows += table.num_rows
        if limit is not None and rows >= limit:
            break
    if rows == 0:
        raise DatasetError(f"{Path(root) / split}: no rows")
    arrays = {k: np.concatenate(v).astype(np.float32, copy=False) for k, v in parts.items()}
    if limit is not None:
        arrays = {k: v[:limit] for k, v in arrays.items()}
    return arrays
