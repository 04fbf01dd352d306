"""The columns of a scan row, declared once.

Every stage of the beamtime job passes rows (dicts) or numpy batches with exactly these
columns (``empty_row``); the summary table (``SUMMARY_COLUMNS``, its Arrow types) and the
arrays of the per-scan HDF5 file (``HDF5_ARRAYS``) follow from the declarations here.

Columns a step computes with are typed scalars or arrays. Two columns, ``parameters``
(the preprocessing record) and ``model`` (what model answered), are provenance only:
nested records whose fields differ by source format, which no Arrow column type holds
across scans, so each travels as one JSON text written once and decoded only by the
result writer (``steps.finish_scan``); no step reads a value out of them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from cdiflow import OBJECT_SIZE, PATTERN_SIZE

RESULT_SIZE = 56  # side of the stored object images at 64 x 64: the largest upper bound


def result_size(pattern_size: int) -> int:
    """Side of the stored object images for a refinement pattern of ``pattern_size``:
    ``RESULT_SIZE`` at 64, scaled with the size (224 at 256)."""
    return max(1, RESULT_SIZE * int(pattern_size) // PATTERN_SIZE)


KINDS = ("str", "json", "int", "float", "bool", "array")
# Array shapes, by name: (side names) resolved per row by ``_shape``.
SHAPES = ("pattern", "object", "result", "curve", "curves", "ragged")


@dataclasses.dataclass(frozen=True)
class Column:
    """One column of a scan row.

    kind : ``str``, ``json`` (provenance text), ``int``, ``float``, ``bool`` or ``array``.
    where : ``row`` (only in rows), ``summary`` (only in the summary table: the writer
        adds it) or ``both``.
    shape, dtype : of an ``array`` column: ``pattern`` (64 x 64), ``object`` (32 x 32),
        ``result`` (``RESULT_SIZE`` squared), ``curve`` (one value per iteration),
        ``curves`` (one curve per refinement start: starts x iterations) or ``ragged``
        (R x R refinement patterns, R varying by scan; 1 x 1 when empty).
    hdf5 : the dataset name of the array in the per-scan HDF5 file ("" : not stored).
    """

    name: str
    kind: str
    where: str = "both"
    shape: str = ""
    dtype: str = ""
    hdf5: str = ""

    @property
    def in_row(self) -> bool:
        return self.where in ("row", "both")

    @property
    def in_summary(self) -> bool:
        return self.where in ("summary", "both")


def _array(name: str, shape: str, dtype: str, hdf5: str = "") -> Column:
    return Column(name, "array", "row", shape, dtype, hdf5)


# In summary-table order; row-only columns sit where they are made.
COLUMNS = (
    Column("scan", "str"),
    Column("key", "str"),
    Column("number", "int"),
    Column("source", "str"),
    Column("status", "str"),
    Column("reason", "str"),
    Column("error_kind", "str"),
    Column("stage", "str"),
    _array("modulus", "pattern", "float32", "modulus"),
    _array("mask", "pattern", "bool", "mask"),
    _array("refine_modulus", "ragged", "float32", "refine_modulus"),
    _array("refine_mask", "ragged", "bool", "refine_mask"),
    Column("refine_size", "int", "row"),
    # what refinement needs of the preprocessing record, typed
    Column("refine_scale", "float", "row"),
    Column("object_extent_y", "float", "row"),
    Column("object_extent_x", "float", "row"),
    Column("pattern_counts", "float", "row"),
    Column("parameters", "json", "row"),
    _array("cnn_amplitude", "object", "float32", "cnn_amplitude"),
    _array("cnn_phase", "object", "float32", "cnn_phase"),
    Column("cnn_chi2", "float"),
    Column("adapted_cnn_chi2", "float"),
    _array("amplitude", "result", "float32", "amplitude"),
    _array("phase", "result", "float32", "phase"),
    _array("support", "result", "bool", "support"),
    _array("chi2_curve", "curve", "float32", "chi2"),
    # every start's chi^2 per iteration, the answer's among them (NaN: a failed start)
    _array("start_chi2_curves", "curves", "float32", "chi2_starts"),
    # which start the answer is: its row of start_chi2_curves (0: the configured start,
    # the CNN guess by default; 1..: random phase in its support)
    Column("answer_start", "int"),
    Column("refined_chi2", "float"),
    Column("iterations", "int"),
    # how far to trust an ok scan (``cdiflow.beamtime.verdict``)
    Column("verdict", "str"),
    Column("starts", "int"),
    Column("consensus_error", "float"),
    Column("support_fraction", "float"),
    Column("chi2_converged", "bool"),
    Column("oversampling_y", "float"),
    Column("oversampling_x", "float"),
    Column("upper_bound", "int"),
    Column("frames", "int"),
    Column("raw_bytes", "int"),
    Column("model", "json", "row"),
    Column("t_read", "float"),
    Column("t_preprocess", "float"),
    Column("t_cnn", "float"),
    Column("t_refine", "float"),
    # added by the writer
    Column("t_write", "float", "summary"),
    Column("result", "str", "summary"),
    Column("preview", "str", "summary"),
    Column("skipped", "bool", "summary"),
    # what made a row (``results.stale_reason``)
    Column("model_version", "str", "summary"),
    Column("config_hash", "str", "summary"),
    Column("input_fingerprint", "str"),
)
BY_NAME = {c.name: c for c in COLUMNS}

SUMMARY_COLUMNS = tuple(c.name for c in COLUMNS if c.in_summary)
# The summary columns a worker fills in (the writer adds the rest).
SUMMARY_SCALARS = tuple(c.name for c in COLUMNS if c.where == "both")
VERDICT_COLUMNS = ("verdict", "starts", "consensus_error", "support_fraction", "chi2_converged")
# What made a row: the model (``sha256:<hex>`` of a weights file or the pinned
# ``models:/NAME/VERSION``), the hash of the reconstruction config (``config_hash`` of
# ``ReconstructConfig``) and a cheap fingerprint of the input files (sizes, mtimes and
# paths). A finished scan is kept on a re-run only when all three match.
PROVENANCE_COLUMNS = ("model_version", "config_hash", "input_fingerprint")
HDF5_ARRAYS = {c.hdf5: c for c in COLUMNS if c.hdf5}


def _shape(column: Column, iterations: int, starts: int = 1) -> tuple[int, ...]:
    p, n, r = PATTERN_SIZE, OBJECT_SIZE, RESULT_SIZE
    sides = {
        "pattern": (p, p),
        "object": (n, n),
        "result": (r, r),
        "ragged": (1, 1),
        "curve": (iterations,),
        "curves": (starts, iterations),
    }
    return sides[column.shape]


def _empty(column: Column, iterations: int, starts: int = 1):
    if column.kind == "array":
        fill = np.nan if column.shape in ("curve", "curves") else 0
        return np.full(_shape(column, iterations, starts), fill, np.dtype(column.dtype))
    return {"str": "", "json": "{}", "int": 0, "float": float("nan"), "bool": False}[column.kind]


def empty_row(item: dict, iterations: int, starts: int = 1) -> dict:
    """A row with every column of every stage (zeros / NaN / ""), from a planned item.

    ``iterations`` sizes the chi^2 curves, ``starts`` (``ReconstructConfig.starts``) the
    rows of ``start_chi2_curves``.
    """
    row = {c.name: _empty(c, iterations, starts) for c in COLUMNS if c.in_row}
    row.update(
        scan=item["scan"],
        key=item["key"],
        number=int(item["number"]),
        source=item["source"],
        input_fingerprint=item.get("input_fingerprint", ""),
        status="ok",
    )
    return row


def summary_value(column: Column, value):
    """``value`` as the summary table's type for ``column`` (None for missing / NaN)."""
    if value is None:
        return None
    if column.kind == "int":
        return int(value)
    if column.kind == "bool":
        return bool(value)
    if column.kind == "float":
        value = float(value)
        return value if np.isfinite(value) else None
    return value
