"""Rows and batches of the per-scan steps, and how a scan is marked failed.

A *row* is a dict of scalars and arrays for one scan, with every column of
``cdiflow.beamtime.schema`` from the first stage on (``empty_row``), so the table schema
never changes between ok and failed scans; a *batch* is a dict of stacked numpy arrays
(Ray Data's ``batch_format="numpy"``). ``fail`` and ``fail_in_batch`` mark a scan failed
with a one-line reason.
"""

from __future__ import annotations

import numpy as np

from cdiflow.errors import CdiflowError


def fail(row: dict, stage: str, exc: BaseException | str, kind: str = "") -> dict:
    """Mark ``row`` failed at ``stage`` with a one-line reason (in place; returns it)."""
    row["status"] = "failed"
    row["verdict"] = "failed"
    row["stage"] = stage
    row["reason"] = exc if isinstance(exc, str) else reason_of(exc)
    row["error_kind"] = kind or ("" if isinstance(exc, str) else kind_of(exc))
    return row


def reason_of(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, CdiflowError):  # unexpected: say what it was
        text = f"{type(exc).__name__}: {text}"
    return text[:500]


def kind_of(exc: BaseException) -> str:
    kind = getattr(exc, "kind", None)
    return str(kind) if isinstance(kind, str) else type(exc).__name__


# --- batches -----------------------------------------------------------------------------


def rows_to_batch(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows -> a numpy batch (what Ray Data's ``map_batches`` passes).

    Arrays of one shape are stacked; arrays of different shapes (refinement patterns of
    different sizes) become a 1-D object array of arrays, as Ray Data passes a ragged
    tensor column.
    """
    batch = {}
    for name in rows[0]:
        values = [r[name] for r in rows]
        if isinstance(values[0], str):
            batch[name] = np.array(values, dtype=object)
            continue
        arrays = [np.asarray(v) for v in values]
        if len({a.shape for a in arrays}) == 1:
            batch[name] = np.stack(arrays)
        else:
            batch[name] = ragged(arrays)
    return batch


def ragged(arrays: list[np.ndarray]) -> np.ndarray:
    """A 1-D object array holding ``arrays`` as they are (no stacking)."""
    out = np.empty(len(arrays), dtype=object)
    for i, a in enumerate(arrays):
        out[i] = a
    return out


def set_cell(batch: dict, name: str, i: int, value: np.ndarray) -> None:
    """``batch[name][i] = value``, turning the column ragged when the shape differs."""
    column = batch[name]
    if column.dtype != object and column.shape[1:] != np.shape(value):
        column = batch[name] = ragged(list(column))
    column[i] = value


def batch_to_rows(batch: dict[str, np.ndarray]) -> list[dict]:
    """A numpy batch -> rows (scalars as Python values)."""
    size = len(batch["key"])
    rows = []
    for i in range(size):
        row = {}
        for name, column in batch.items():
            value = column[i]
            row[name] = value.item() if isinstance(value, np.generic) else value
        rows.append(row)
    return rows


def ok_mask(batch: dict) -> np.ndarray:
    return np.array([s == "ok" for s in batch["status"]], dtype=bool)


def fail_in_batch(batch: dict, i: int, stage: str, exc: BaseException) -> None:
    batch["status"][i] = "failed"
    batch["verdict"][i] = "failed"
    batch["stage"][i] = stage
    batch["reason"][i] = reason_of(exc)
    batch["error_kind"][i] = kind_of(exc)


def writable(batch: dict) -> dict:
    """Copies of the columns, so a stage may write into arrays Ray handed it read-only."""
    return {k: np.array(v, copy=True) for k, v in batch.items()}
