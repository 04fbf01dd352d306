"""Result files of a beamtime reconstruction: per-scan HDF5, safe paths, the summary table.

Layout of an output folder (``--out``)::

    OUT/
      scans/<key>.h5         one per finished scan (written atomically, ``complete`` attr)
      scans/<key>.cxi        the same answer in CXI 1.6 for PyNX / silx (``cxi_results``),
                             written atomically just before the .h5
      previews/<key>.png     amplitude / unwrapped phase preview
      summary.parquet        one row per scan (ok and failed), rebuilt on every run
      summary.csv            the same table as CSV
      report.html            thumbnails and the table

``<key>`` is a sanitised scan name (``scan_key``); ``result_path`` refuses any path that
would leave OUT, whatever the scan is called (``../../x``, absolute paths, NUL bytes).

A per-scan file holds the arrays (centred, see ``cdiflow.physics.fft``):
``amplitude``, ``phase`` (radians), ``phase_unwrapped`` (radians, NaN outside the
support) and ``support`` (bool), all 56 x 56 (the central box of the object field, so
objects wider than the 32-pixel training box fit); ``chi2`` (per iteration); ``modulus``
and ``mask`` (the P x P pattern phased); ``cnn_amplitude`` and ``cnn_phase``; and the
provenance as JSON attributes ``preprocessing``, ``model``, ``reconstruction``,
``summary``, plus scalar attributes ``cdiflow_version``, ``git_sha``, ``scan``,
``source``, ``cnn_chi2``, ``refined_chi2``, ``verdict``, ``complete``. The arrays are
those of the best of the scan's refinement runs (least chi^2).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from cdiflow.beamtime.schema import BY_NAME, PROVENANCE_COLUMNS, SUMMARY_COLUMNS, summary_value
from cdiflow.errors import OutputDirError
from cdiflow.formats import atomic

RESULT_SCHEMA_VERSION = 1
SCANS_DIR = "scans"
PREVIEWS_DIR = "previews"
SUMMARY_PARQUET = "summary.parquet"
SUMMARY_CSV = "summary.csv"
REPORT_HTML = "report.html"

_CHANGED = {
    "model_version": "model changed",
    "config_hash": "config changed",
    "input_fingerprint": "input changed",
}

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_KEY = 80


def scan_key(name: str) -> str:
    """A file-name-safe key for a scan name: only ``[A-Za-z0-9._-]``, no leading dot.

    Names that had to change get a short hash of the original appended, so two different
    hostile names (``a/b`` and ``a_b``) never share a key. ``scan_key(k) == k`` for a
    key that is already safe.
    """
    text = str(name)
    safe = _UNSAFE.sub("_", text).lstrip(".-_")[:_MAX_KEY] or "scan"
    if safe != text:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:8]
        safe = f"{safe}-{digest}"
    return safe


def result_path(out: str | Path, folder: str, key: str, suffix: str) -> Path:
    """``out/folder/key+suffix``, guaranteed to lie inside ``out``.

    Raises
    ------
    OutputDirError
        ``key`` is not a sanitised key, or the path resolves outside ``out``.
    """
    if scan_key(key) != key:
        raise OutputDirError(f"scan key {key!r} is not sanitised")
    root = Path(out).resolve()
    path = (root / folder / f"{key}{suffix}").resolve()
    if root not in path.parents:
        raise OutputDirError(f"result path {path} would leave the output folder {root}")
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """``cdiflow.formats.atomic.atomic_write_bytes``, creating the result folder first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.atomic_write_bytes(path, data)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=_json_default)


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_scan_result(
    path: Path,
    arrays: dict[str, np.ndarray],
    provenance: dict[str, Any],
    attrs: dict[str, str | int | float],
) -> Path:
    """Write one scan's HDF5 result atomically (temp file in the same folder, then rename).

    Parameters
    ----------
    path : the final ``scans/<key>.h5`` path (from ``result_path``).
    arrays : dataset name -> array (written with gzip for arrays of 64+ elements).
    provenance : name -> JSON-ready dict, stored as JSON string attributes.
    attrs : plain scalar attributes (version, git SHA, scan, source, ...).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic.atomic_path(path) as tmp, h5py.File(tmp, "w") as h5:
        for name, value in arrays.items():
            value = np.asarray(value)
            opts = {"compression": "gzip", "compression_opts": 4} if value.size >= 64 else {}
            h5.create_dataset(name, data=value, **opts)
        for name, value in provenance.items():
            h5.attrs[name] = _json(value)
        for name, value in attrs.items():
            h5.attrs[name] = "" if value is None else value
        h5.attrs["schema_version"] = RESULT_SCHEMA_VERSION
        h5.attrs["complete"] = True  # last, so only a fully written file carries it
    return path


def read_completed_summary(path: Path) -> dict[str, Any] | None:
    """The summary row stored in a finished result file, or None if it is not complete.

    A missing, truncated, foreign or unfinished file is "not complete": the scan is redone.
    """
    if not path.is_file():
        return None
    try:
        with h5py.File(path, "r") as h5:
            if not bool(h5.attrs.get("complete", False)):
                return None
            if int(h5.attrs.get("schema_version", -1)) != RESULT_SCHEMA_VERSION:
                return None
            row = json.loads(h5.attrs["summary"])
    except Exception:  # noqa: BLE001 - any unreadable file is simply redone
        return None
    return row if isinstance(row, dict) and row.get("status") == "ok" else None


def stale_reason(row: dict[str, Any], expected: dict[str, str]) -> str:
    """Why a finished summary ``row`` cannot be kept on this run; "" when it can.

    ``expected`` holds this run's ``PROVENANCE_COLUMNS``. Returns e.g. ``"model
    changed"`` or ``"config changed, input changed"``. An empty value on either side
    (a result written before these columns existed) never matches.
    """
    changed = [
        _CHANGED[name]
        for name in PROVENANCE_COLUMNS
        if not expected.get(name) or row.get(name) != expected[name]
    ]
    return ", ".join(changed)


def read_scan_result(path: str | Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a result file: (arrays, attributes with JSON attributes decoded)."""
    with h5py.File(path, "r") as h5:
        arrays = {name: h5[name][()] for name in h5.keys()}
        attrs: dict[str, Any] = {}
        for name, value in h5.attrs.items():
            if isinstance(value, bytes):
                value = value.decode()
            if isinstance(value, str) and value[:1] in "{[":
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    pass
            attrs[name] = value.item() if isinstance(value, np.generic) else value
    return arrays, attrs


def summary_table(rows: list[dict[str, Any]]):
    """Rows -> a ``pyarrow.Table`` with ``SUMMARY_COLUMNS`` in order, typed by the schema
    (missing and NaN -> null)."""
    import pyarrow as pa

    return pa.table(
        {
            name: [summary_value(BY_NAME[name], row.get(name)) for row in rows]
            for name in SUMMARY_COLUMNS
        }
    )


def write_summary(out: str | Path, rows: list[dict[str, Any]]) -> tuple[Path, Path]:
    """Write ``summary.parquet`` and ``summary.csv`` atomically; return both paths."""
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    out = Path(out)
    table = summary_table(rows)
    parquet = out / SUMMARY_PARQUET
    buffer = io.BytesIO()
    pq.write_table(table, buffer)
    atomic_write_bytes(parquet, buffer.getvalue())
    csv = out / SUMMARY_CSV
    buffer = io.BytesIO()
    pacsv.write_csv(table, buffer)
    atomic_write_bytes(csv, buffer.getvalue())
    return parquet, csv
