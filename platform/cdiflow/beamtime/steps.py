"""The per-scan work of a beamtime reconstruction, as plain functions (no Ray here).

``cdiflow.pipelines.reconstruct`` strings these together on Ray Data; tests call them
directly. Data moves between stages as *rows* (dicts of scalars and arrays) or *batches*
(dicts of stacked numpy arrays, Ray Data's ``batch_format="numpy"``); every row carries
every column from the first stage on, so the table schema never changes between ok and
failed scans. A failure at any stage sets ``status="failed"`` with a one-line
``reason``, an ``error_kind`` and the ``stage``, and later stages pass the row through:
one bad scan never stops the others.

Stages (planning and reading in ``sources``, the CNN in ``cnn``, refinement in
``refine``, the columns in ``schema``, the row helpers in ``rows``, ``ReconstructConfig``
in ``config``; this module re-exports what callers use):

1. ``plan_scans``: sources (beamtime folders, folders of scan files, single sources)
   -> scan items, each with a sanitised, unique output ``key``;
2. ``read_and_preprocess``: one item -> row with the 64 x 64 modulus and mask the CNN
   sees, and the refinement pattern (``refine_modulus``, ``refine_mask``: R x R,
   ``--refine-size``);
3. ``predict_batch`` (``cnn``): CNN amplitude + phase for the ok rows of a batch,
   and its chi^2; with ``--adapt`` from a copy of the CNN adapted to the patterns;
4. ``refine_batch``: iterative refinement from several starts per scan (default: the
   CNN's and three random phases in its support, the paper's schedule and shrink-wrap,
   batched per refinement size); the best run is the answer, and the runs together give
   the ``verdict`` (``ok`` or ``suspect: <reason>``, ``verdict``);
5. ``finish_scan``: unwrap the phase, write the PNG figure (``report_figure``), the CXI
   result and the HDF5 result (last: its ``complete`` flag marks the scan finished),
   return the summary row.
"""

from __future__ import annotations

import json
import time
import traceback
import uuid
from pathlib import Path
from typing import Any

import numpy as np
from skimage.restoration import unwrap_phase

from cdiflow import __version__
from cdiflow.beamtime.cnn import predict_batch
from cdiflow.beamtime.config import ReconstructConfig
from cdiflow.beamtime.cxi import CXIProcess, write_cxi_result
from cdiflow.beamtime.preprocess import preprocess
from cdiflow.beamtime.refine import object_images, refine_batch, upper_bound_side
from cdiflow.beamtime.report_figure import save_preview
from cdiflow.beamtime.results import PREVIEWS_DIR, SCANS_DIR, result_path, write_scan_result
from cdiflow.beamtime.rows import batch_to_rows, fail, kind_of, reason_of, rows_to_batch
from cdiflow.beamtime.schema import (
    HDF5_ARRAYS,
    RESULT_SIZE,
    SUMMARY_SCALARS,
    empty_row,
    result_size,
)
from cdiflow.beamtime.sources import plan_scans, read_scan_item

__all__ = [  # the stages, and the row helpers tests and benchmarks use
    "RESULT_SIZE",
    "ReconstructConfig",
    "batch_to_rows",
    "empty_row",
    "finish_scan",
    "object_images",
    "plan_scans",
    "predict_batch",
    "read_and_preprocess",
    "refine_batch",
    "result_size",
    "rows_to_batch",
    "run_items_locally",
    "unwrapped_phase",
    "upper_bound_side",
]


def read_and_preprocess(
    item: dict, config: ReconstructConfig, token: str = "", iterations: int | None = None
) -> dict:
    """Read and preprocess one scan; never raises for a bad scan (the row says why).

    Returns a row (``empty_row`` columns) with ``modulus``, ``mask``, ``parameters``
    (JSON), the oversampling per axis, the frame count, raw bytes and timings.
    """
    iterations = config.iterations if iterations is None else iterations
    row = empty_row(item, iterations, starts=config.starts)
    if item["kind"] == "invalid":
        return fail(row, "read", item["reason"], item["error_kind"])
    t0 = time.perf_counter()
    try:
        scan = read_scan_item(item, token, config.max_source_bytes)
    except Exception as exc:  # noqa: BLE001 - every failure is recorded, none aborts the job
        row["t_read"] = time.perf_counter() - t0
        return fail(row, "read", exc)
    t1 = time.perf_counter()
    row["t_read"] = t1 - t0
    row["frames"] = int(scan.frames.shape[0])
    row["raw_bytes"] = int(scan.nbytes_raw)
    try:
        pre = preprocess(scan, config.preprocess)
    except Exception as exc:  # noqa: BLE001
        row["t_preprocess"] = time.perf_counter() - t1
        return fail(row, "preprocess", exc)
    del scan
    row["t_preprocess"] = time.perf_counter() - t1
    row["modulus"] = pre.modulus.astype(np.float32)
    row["mask"] = pre.mask.astype(bool)
    row["refine_modulus"] = pre.refine_modulus.astype(np.float32)
    row["refine_mask"] = pre.refine_mask.astype(bool)
    row["refine_size"] = int(pre.refine_modulus.shape[-1])
    params = dict(pre.parameters)
    params["source"] = pre.source
    row["parameters"] = json.dumps(params, sort_keys=True, default=str)  # provenance only
    row["oversampling_y"], row["oversampling_x"] = (float(o) for o in params["oversampling"])
    row["refine_scale"] = float(params["refine"]["scale"])
    extent = params["refine"].get("object_extent") or [0.0, 0.0]
    row["object_extent_y"], row["object_extent_x"] = (float(e) for e in extent)
    row["pattern_counts"] = float(params.get("pattern_counts", float("nan")))
    return row


# --- 5. results ----------------------------------------------------------------------------


def unwrapped_phase(phase: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Unwrap a (N, N) phase inside ``support`` (Herraez et al. 2002, skimage); NaN outside."""
    if not support.any():
        return np.full(phase.shape, np.nan, np.float32)
    masked = np.ma.masked_array(phase.astype(np.float64), mask=~support)
    unwrapped = unwrap_phase(masked)
    values = np.ma.filled(unwrapped, np.nan).astype(np.float32)
    inside = values[support]
    values -= np.float32(np.round(np.nanmedian(inside) / (2 * np.pi)) * 2 * np.pi)
    return values


def summary_of(row: dict) -> dict:
    """The summary-table part of a row (plain Python scalars)."""
    out = {}
    for name in SUMMARY_SCALARS:
        value = row[name]
        out[name] = value.item() if isinstance(value, np.generic) else value
    return out


def finish_scan(
    row: dict, out: str | Path, provenance: dict[str, Any], figures: str = "all"
) -> dict:
    """Write an ok scan's HDF5 and CXI results and PNG figure; return its summary row.

    ``figures`` (``ReconstructConfig.figures``): draw the scan's figure for ``all`` scans,
    only ``suspect`` ones, or ``none`` (about 0.5 s of CPU a scan, several times the
    refinement of a 64 x 64 scan).

    ``provenance`` holds ``reconstruction`` (config dict), ``model_version``,
    ``config_hash``, ``git_sha`` and anything else the job records; the summary row
    records the first two and the row's ``input_fingerprint`` (what a re-run compares
    before it keeps the result). A failure while writing fails the scan (it is redone
    on a re-run); failed scans write nothing.
    """
    summary = summary_of(row)
    summary.update(t_write=0.0, result="", preview="", skipped=False)
    summary.update(
        model_version=str(provenance.get("model_version", "")),
        config_hash=str(provenance.get("config_hash", "")),
        input_fingerprint=str(row.get("input_fingerprint", "")),
    )
    if row["status"] != "ok":
        return summary
    t0 = time.perf_counter()
    try:
        summary.update(_write_outputs(row, Path(out), provenance, summary, figures))
    except Exception as exc:  # noqa: BLE001 - e.g. a full disk: this scan fails, others go on
        summary.update(
            status="failed", stage="write", reason=reason_of(exc), error_kind=kind_of(exc)
        )
        summary["verdict"] = "failed"
        summary.update(result="", preview="")
        traceback.print_exc()
    summary["t_write"] = time.perf_counter() - t0
    return summary


def _wants_figure(figures: str, verdict: str) -> bool:
    return figures == "all" or (figures == "suspect" and verdict.startswith("suspect"))


def _write_outputs(row: dict, out: Path, provenance: dict, summary: dict, figures: str) -> dict:
    key = row["key"]
    h5_path = result_path(out, SCANS_DIR, key, ".h5")
    cxi_path = result_path(out, SCANS_DIR, key, ".cxi")
    png_path = result_path(out, PREVIEWS_DIR, key, ".png")
    support = np.asarray(row["support"], bool)
    unwrapped = unwrapped_phase(np.asarray(row["phase"]), support)
    relative = {"result": h5_path.relative_to(out.resolve()).as_posix(), "preview": ""}
    if _wants_figure(figures, str(row["verdict"])):
        save_preview(png_path, row, unwrapped)
        relative["preview"] = png_path.relative_to(out.resolve()).as_posix()
    stored = dict(summary, **relative, t_write=0.0, skipped=False)
    _write_cxi(cxi_path, row, provenance)  # before the .h5, whose flag says "finished"
    write_scan_result(
        h5_path,
        arrays=dict(_stored_arrays(row), phase_unwrapped=unwrapped),
        provenance={
            "preprocessing": json.loads(row["parameters"]),
            "model": json.loads(row["model"]),
            "reconstruction": provenance.get("reconstruction", {}),
            "summary": stored,
        },
        attrs={
            "scan": row["scan"],
            "source": row["source"],
            "cnn_chi2": float(row["cnn_chi2"]),
            "refined_chi2": float(row["refined_chi2"]),
            "verdict": str(row["verdict"]),
            "cdiflow_version": __version__,
            "git_sha": provenance.get("git_sha") or "unknown",
            "phase_units": "radians",
            "convention": "centred arrays (cdiflow.physics.fft); phase global offset removed",
        },
    )
    return relative


def _stored_arrays(row: dict) -> dict[str, np.ndarray]:
    """The row's arrays under their HDF5 names (``schema.HDF5_ARRAYS``)."""
    return {
        name: np.asarray(row[column.name], np.dtype(column.dtype))
        for name, column in HDF5_ARRAYS.items()
    }


def _write_cxi(path: Path, row: dict, provenance: dict) -> None:
    """The CXI copy of the answer (``cdiflow.beamtime.cxi``)."""
    amplitude = np.asarray(row["amplitude"], np.float32)
    phase = np.asarray(row["phase"], np.float32)
    configuration = provenance.get("reconstruction", {})
    process = CXIProcess(
        version=__version__,
        git_sha=provenance.get("git_sha") or "unknown",
        configuration=json.dumps(configuration, sort_keys=True, default=str),
        model=str(provenance.get("model_version", "")),
        model_info=str(row["model"]),
        preprocessing=str(row["parameters"]),
        verdict=str(row["verdict"]),
    )
    write_cxi_result(
        path,
        obj=amplitude * np.exp(1j * phase),
        support=np.asarray(row["support"], bool),
        measured=np.asarray(row["refine_mask"], bool),  # the pattern that was phased
        chi2=np.asarray(row["chi2_curve"], np.float32),
        process=process,
        scan=str(row["scan"]),
    )


# --- the whole chain in one process (tests, benchmarks, debugging without Ray) ----------


def run_items_locally(
    items: list[dict],
    model,
    config: ReconstructConfig,
    out: str | Path,
    provenance: dict[str, Any],
    model_info: str = "{}",
    device: str = "cpu",
) -> list[dict]:
    """Run stages 2-5 on ``items`` in this process, in batches; return summary rows.

    The same functions the Ray job runs, in the same order, so a test of this is a test
    of what every Ray worker does.
    """
    token = uuid.uuid4().hex  # a fresh discovery / calibration cache for this run
    rows = [read_and_preprocess(item, config, token) for item in items]
    summaries = []
    for start in range(0, len(rows), config.refine_batch):
        batch = rows_to_batch(rows[start : start + config.refine_batch])
        batch = predict_batch(model, batch, model_info, device, config)
        batch = refine_batch(batch, config, device)
        summaries += [
            finish_scan(row, out, provenance, config.figures) for row in batch_to_rows(batch)
        ]
    return summaries
