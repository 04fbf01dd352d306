"""The per-scan work of a beamtime reconstruction, as plain functions (no Ray here).

``cdiflow.pipelines.reconstruct`` strings these together on Ray Data; tests call them
directly. Data moves between stages as *rows* (dicts of scalars and arrays) or *batches*
(dicts of stacked numpy arrays, Ray Data's ``batch_format="numpy"``); every row carries
every column from the first stage on, so the table schema never changes between ok and
failed scans. A failure at any stage sets ``status="failed"`` with a one-line
``reason``, an ``error_kind`` and the ``stage``, and later stages pass the row through:
one bad scan never stops the others.

Stages:

1. ``plan_scans``: sources (beamtime folders, folders of scan files, single sources)
   -> scan items, each with a sanitised, unique output ``key``;
2. ``read_and_preprocess``: one item -> row with the 64 x 64 modulus and mask;
3. ``predict_batch``: CNN amplitude + phase for the ok rows of a batch, and its chi^2;
4. ``refine_batch``: iterative refinement (default: CNN phase + support start, the
   paper's schedule and shrink-wrap);
5. ``finish_scan``: unwrap the phase, write the HDF5 result and PNG preview, return the
   summary row.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import time
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from cdiflow import OBJECT_SIZE, PATTERN_SIZE, __version__
from cdiflow.config import Config, require
from cdiflow.errors import CdiflowError
from cdiflow.formats.preprocess import PreprocessConfig
from cdiflow.formats.results import (
    PREVIEWS_DIR,
    SCANS_DIR,
    result_path,
    scan_key,
    write_scan_result,
)
from cdiflow.phasing.shrinkwrap import ShrinkWrap

GENERIC_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".cxi", ".tif", ".tiff", ".npy", ".npz")
STARTS = ("cnn", "random-cnn-support", "random-rectangle")
RESULT_SIZE = 56  # side of the stored object images: the largest upper bound


@dataclasses.dataclass(frozen=True)
class ReconstructConfig(Config):
    """How scans are reconstructed (logged whole into every result file).

    schedule : phasing schedule (default: the paper's 600 ER/HIO iterations).
    start : ``cnn`` (CNN phase + support, the default), ``random-cnn-support`` (random
        phase inside the CNN support) or ``random-rectangle`` (random phase, the 32 x 32
        box): the paper's starts (i)-(iii).
    seed : base seed of the random starts; scan k uses ``(seed, hash(key))``.
    support_threshold : CNN amplitude binarisation threshold (fraction of its maximum).
    beta : HIO feedback.
    cnn_batch, refine_batch : patterns per CNN / refinement call.
    upper_bound : side (pattern pixels) of the square upper-bound support of
        shrink-wrap; 0 (default) sizes it per scan from the oversampling estimate:
        1.5 x the larger estimated object extent, rounded up to even, within
        [32, 56]. The 32-pixel object box clips real objects that are wider than the
        training geometry (scan 54 spans about 28 x 36 pixels): with it, refinement
        from any start stalls near chi^2 2.4e-3 there, like cohere-core on that crop.
    """

    schedule: str = "5*(100*HIO+20*ER)"
    start: str = "cnn"
    seed: int = 0
    support_threshold: float = 0.1
    beta: float = 0.9
    cnn_batch: int = 32
    refine_batch: int = 8
    upper_bound: int = 0
    preprocess: PreprocessConfig = PreprocessConfig()
    shrinkwrap: ShrinkWrap = ShrinkWrap()

    def validate(self) -> None:
        from cdiflow.phasing.schedule import parse

        parse(self.schedule)  # ScheduleSyntaxError (an InputError) points at the position
        require(self.start in STARTS, f"start must be one of {STARTS}, got {self.start!r}")
        require(self.seed >= 0, "seed must be >= 0")
        require(0 < self.support_threshold < 1, "support_threshold must be in (0, 1)")
        require(self.cnn_batch >= 1 and self.refine_batch >= 1, "batch sizes must be >= 1")
        require(
            self.upper_bound == 0 or OBJECT_SIZE <= self.upper_bound <= PATTERN_SIZE,
            f"upper_bound must be 0 (auto) or in [{OBJECT_SIZE}, {PATTERN_SIZE}]",
        )
        require(
            self.preprocess.size == PATTERN_SIZE,
            f"preprocess crop/bin must give {PATTERN_SIZE} pixels, got {self.preprocess.size}",
        )

    @property
    def iterations(self) -> int:
        from cdiflow.phasing.schedule import parse

        return len(parse(self.schedule))


# --- 1. planning --------------------------------------------------------------------------


def plan_scans(sources: list[str | Path], selection: list[int] | None = None) -> list[dict]:
    """List the scans of ``sources`` as items for ``read_and_preprocess``.

    Parameters
    ----------
    sources : 34-ID-C beamtime folders, folders of scan files (HDF5/CXI/NeXus, TIFF,
        NPY/NPZ), or single ``open_scan`` sources (``file.h5:/entry/data``).
    selection : scan numbers to keep (``--scans``); None keeps all. Files in a folder
        of scan files take their number from the digits that end their name; a single
        file given as a source is always kept.

    Returns
    -------
    list of dict items (``scan``, ``key``, ``number``, ``kind``, ``root``, ``source``,
    ``reason``). A source that cannot be listed becomes one item of kind ``invalid``
    that turns into a failed row. Keys are unique; with several sources they start with
    the source's folder name, so two beamtimes never write into each other's files.
    """
    items: list[dict] = []
    for source in sources:
        found = _items_of_source(str(source), selection)
        if len(sources) > 1:
            prefix = Path(str(source).split(":", 1)[0].rstrip("/")).name or "source"
            for item in found:
                item["key_name"] = f"{prefix}__{item['key_name']}"
        items.extend(found)
    seen: dict[str, int] = {}
    for item in items:
        key = scan_key(item.pop("key_name"))
        if key in seen:
            seen[key] += 1
            key = f"{key}-{seen[key]}"
        else:
            seen[key] = 1
        item["key"] = key
    return items


def _item(scan, number, kind, root="", source="", reason="", error_kind="") -> dict:
    return {
        "scan": str(scan),
        "key_name": str(scan),
        "number": -1 if number is None else int(number),
        "kind": kind,
        "root": str(root),
        "source": str(source),
        "reason": reason,
        "error_kind": error_kind,
    }


def _items_of_source(source: str, selection: list[int] | None) -> list[dict]:
    from cdiflow.formats.aps34idc import discover_beamtime
    from cdiflow.formats.scan import ScanError

    path = Path(source)
    if path.is_dir() and _is_generic_folder(path):
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in GENERIC_SUFFIXES)
        items = [_item(p.stem, _trailing_number(p.stem), "file", path, p) for p in files]
        if selection is not None:
            items = [i for i in items if i["number"] in set(selection)]
        return items
    if not path.is_dir():
        return [_item(path.name or source, _trailing_number(path.stem), "file", "", source)]
    try:
        beamtime = discover_beamtime(path)
    except ScanError as exc:
        return [_item(path.name, None, "invalid", path, path, _reason(exc), _kind(exc))]
    return [
        _item(entry.name, entry.number, "aps34idc", beamtime.root, entry.folder or path)
        for entry in beamtime.scans(selection)
    ]


def _is_generic_folder(path: Path) -> bool:
    """A folder of scan files: no spec file, and at least one file of a scan type."""
    if any(path.glob("*.spec")):
        return False
    return any(p.suffix.lower() in GENERIC_SUFFIXES for p in path.iterdir() if p.is_file())


def _trailing_number(stem: str) -> int | None:
    digits = ""
    for ch in reversed(stem):
        if not ch.isdigit():
            break
        digits = ch + digits
    return int(digits) if digits else None


# --- 2. read + preprocess -----------------------------------------------------------------


def empty_row(item: dict, iterations: int) -> dict:
    """A row with every column of every stage (zeros / NaN), from a planned item."""
    p, n, r = PATTERN_SIZE, OBJECT_SIZE, RESULT_SIZE
    nan = float("nan")
    return {
        "scan": item["scan"],
        "key": item["key"],
        "number": int(item["number"]),
        "source": item["source"],
        "status": "ok",
        "reason": "",
        "error_kind": "",
        "stage": "",
        "modulus": np.zeros((p, p), np.float32),
        "mask": np.zeros((p, p), bool),
        "parameters": "{}",
        "oversampling_y": nan,
        "oversampling_x": nan,
        "frames": 0,
        "raw_bytes": 0,
        "cnn_amplitude": np.zeros((n, n), np.float32),
        "cnn_phase": np.zeros((n, n), np.float32),
        "cnn_chi2": nan,
        "amplitude": np.zeros((r, r), np.float32),
        "phase": np.zeros((r, r), np.float32),
        "support": np.zeros((r, r), bool),
        "upper_bound": 0,
        "chi2_curve": np.full((iterations,), nan, np.float32),
        "refined_chi2": nan,
        "model": "{}",
        "t_read": 0.0,
        "t_preprocess": 0.0,
        "t_cnn": 0.0,
        "t_refine": 0.0,
    }


def fail(row: dict, stage: str, exc: BaseException | str, kind: str = "") -> dict:
    """Mark ``row`` failed at ``stage`` with a one-line reason (in place; returns it)."""
    row["status"] = "failed"
    row["stage"] = stage
    row["reason"] = exc if isinstance(exc, str) else _reason(exc)
    row["error_kind"] = kind or ("" if isinstance(exc, str) else _kind(exc))
    return row


def _reason(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    if not isinstance(exc, CdiflowError):  # unexpected: say what it was
        text = f"{type(exc).__name__}: {text}"
    return text[:500]


def _kind(exc: BaseException) -> str:
    kind = getattr(exc, "kind", None)
    return str(kind) if isinstance(kind, str) else type(exc).__name__


@functools.lru_cache(maxsize=4)
def _beamtime(root: str, token: str):
    """Discovery of a beamtime, cached per worker process and job (``token``)."""
    from cdiflow.formats.aps34idc import discover_beamtime

    return discover_beamtime(root)


@functools.lru_cache(maxsize=4)
def _calibration(root: str, token: str):
    """Dark + whitefield of a beamtime, loaded once per worker process and job."""
    from cdiflow.formats.aps34idc import load_calibration

    return load_calibration(_beamtime(root, token))


def read_scan_item(item: dict, token: str = ""):
    """Read one planned item as a ``cdiflow.formats.scan.Scan`` (raises ``ScanError``)."""
    from cdiflow.formats.generic import open_scan

    if item["kind"] == "aps34idc":
        from cdiflow.formats.aps34idc import read_scan

        beamtime = _beamtime(item["root"], token)
        entry = next(
            (e for e in beamtime.scans([item["number"]]) if e.number == item["number"]), None
        )
        return read_scan(beamtime, entry, calibration=_calibration_or_raise(item, token, entry))
    return open_scan(item["source"])


def _calibration_or_raise(item: dict, token: str, entry):
    # A scan without data fails as "no data" before the calibration is blamed.
    if entry is None or entry.folder is None or entry.spec is None or not entry.frame_paths:
        return None  # read_scan raises the precise error before it needs calibration
    return _calibration(item["root"], token)


def read_and_preprocess(
    item: dict, config: ReconstructConfig, token: str = "", iterations: int | None = None
) -> dict:
    """Read and preprocess one scan; never raises for a bad scan (the row says why).

    Returns a row (``empty_row`` columns) with ``modulus``, ``mask``, ``parameters``
    (JSON), the oversampling per axis, the frame count, raw bytes and timings.
    """
    from cdiflow.formats.preprocess import preprocess

    row = empty_row(item, config.iterations if iterations is None else iterations)
    if item["kind"] == "invalid":
        return fail(row, "read", item["reason"], item["error_kind"])
    t0 = time.perf_counter()
    try:
        scan = read_scan_item(item, token)
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
    params = dict(pre.parameters)
    params["source"] = pre.source
    row["parameters"] = json.dumps(params, sort_keys=True, default=str)
    row["oversampling_y"], row["oversampling_x"] = (float(o) for o in params["oversampling"])
    return row


# --- batches -----------------------------------------------------------------------------


def rows_to_batch(rows: list[dict]) -> dict[str, np.ndarray]:
    """Rows -> a numpy batch (what Ray Data's ``map_batches`` passes)."""
    batch = {}
    for name in rows[0]:
        values = [r[name] for r in rows]
        if isinstance(values[0], str):
            batch[name] = np.array(values, dtype=object)
        else:
            batch[name] = np.stack([np.asarray(v) for v in values])
    return batch


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


def _ok(batch: dict) -> np.ndarray:
    return np.array([s == "ok" for s in batch["status"]], dtype=bool)


def _fail_in_batch(batch: dict, i: int, stage: str, exc: BaseException) -> None:
    batch["status"][i] = "failed"
    batch["stage"][i] = stage
    batch["reason"][i] = _reason(exc)
    batch["error_kind"][i] = _kind(exc)


def _writable(batch: dict) -> dict:
    """Copies of the columns, so a stage may write into arrays Ray handed it read-only."""
    return {k: np.array(v, copy=True) for k, v in batch.items()}


# --- 3. CNN ------------------------------------------------------------------------------


def predict_batch(model, batch: dict, model_info: str = "{}", device: str = "cpu") -> dict:
    """Run the CNN on the ok rows: ``cnn_amplitude``, ``cnn_phase`` (target p in (0, 1)),
    ``cnn_chi2`` (eq. 5 of the CNN object's |F| against the pattern, scale fitted, over
    measured pixels) and ``t_cnn`` (seconds per pattern). ``model_info`` (JSON) is
    recorded in every row.
    """
    import torch

    from cdiflow.metrics import chi2
    from cdiflow.phasing.starts import phase_from_target
    from cdiflow.physics.fft import object_modulus

    batch = _writable(batch)
    batch["model"] = np.array([model_info] * len(batch["key"]), dtype=object)
    ok = np.flatnonzero(_ok(batch))
    if len(ok) == 0:
        return batch
    t0 = time.perf_counter()
    try:
        modulus = torch.from_numpy(batch["modulus"][ok]).float()
        with torch.no_grad():
            out = model(modulus.to(device)).float().cpu()
        amp, target = out[:, 0], out[:, 1]
        obj = torch.polar(amp, phase_from_target(target))
        mask = torch.from_numpy(batch["mask"][ok])
        fit = chi2(object_modulus(obj, PATTERN_SIZE), modulus, mask=mask, fit_scale=True)
    except Exception as exc:  # noqa: BLE001 - a CNN failure fails these scans, not the job
        for i in ok:
            _fail_in_batch(batch, int(i), "cnn", exc)
        return batch
    per = (time.perf_counter() - t0) / len(ok)
    batch["cnn_amplitude"][ok] = amp.numpy()
    batch["cnn_phase"][ok] = target.numpy()
    batch["cnn_chi2"][ok] = fit.numpy()
    batch["t_cnn"][ok] = per
    return batch


# --- 4. refinement -----------------------------------------------------------------------


def start_seed(seed: int, key: str) -> int:
    """Seed of scan ``key``'s random start: a pure function of (seed, key)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def make_start(config: ReconstructConfig, amp: np.ndarray, target: np.ndarray, keys):
    """The configured start for a batch (B, N, N) of CNN outputs (``cdiflow.phasing``)."""
    import torch

    from cdiflow.phasing.starts import (
        Start,
        cnn_start,
        random_phase_cnn_support,
        random_phase_rectangle,
    )

    if config.start == "cnn":
        return cnn_start(amp, target, threshold=config.support_threshold)
    parts = []
    for i, key in enumerate(keys):
        seed = start_seed(config.seed, str(key))
        if config.start == "random-rectangle":
            parts.append(random_phase_rectangle(1, seed))
        else:
            parts.append(random_phase_cnn_support(amp[i : i + 1], seed, config.support_threshold))
    return Start(
        torch.cat([s.object for s in parts]), torch.cat([s.support for s in parts]), parts[0].name
    )


def upper_bound_side(config: ReconstructConfig, parameters: str) -> int:
    """Side of the square upper-bound support for one scan (``ReconstructConfig``)."""
    if config.upper_bound:
        return config.upper_bound
    extent = json.loads(parameters).get("object_extent") or [0, 0]
    side = int(np.ceil(1.5 * max(float(e) for e in extent) / 2.0)) * 2
    return int(min(max(side, OBJECT_SIZE), 56))


def refine_batch(batch: dict, config: ReconstructConfig, device: str = "cpu") -> dict:
    """Refine the ok rows from the configured start (``cdiflow.phasing.refine.refine``).

    Sets ``amplitude`` and ``phase`` (radians, global phase removed) of the central
    N x N, ``support`` (N x N), ``chi2_curve`` (per iteration), ``refined_chi2`` (chi^2
    of the best support-consistent iterate), ``upper_bound`` and ``t_refine`` (seconds
    per pattern). Rows with the same upper bound are refined together; a pattern whose
    refinement fails (support collapse, bad start) fails alone.
    """
    batch = _writable(batch)
    ok = np.flatnonzero(_ok(batch))
    sides = np.array([upper_bound_side(config, batch["parameters"][i]) for i in ok], int)
    for side in np.unique(sides):
        _refine_rows(batch, ok[sides == side], int(side), config, device)
    return batch


def _refine_rows(batch: dict, rows: np.ndarray, side: int, config, device: str) -> None:
    import torch

    from cdiflow.phasing.refine import refine
    from cdiflow.phasing.shrinkwrap import square_support

    t0 = time.perf_counter()
    try:
        start = make_start(
            config, batch["cnn_amplitude"][rows], batch["cnn_phase"][rows], batch["key"][rows]
        )
        result = refine(
            torch.from_numpy(batch["modulus"][rows]),
            start,
            config.schedule,
            mask=torch.from_numpy(batch["mask"][rows]),
            beta=config.beta,
            shrinkwrap=config.shrinkwrap,
            upper_bound=square_support(PATTERN_SIZE, side),
            device=device,
        )
    except Exception as exc:  # noqa: BLE001
        for i in rows:
            _fail_in_batch(batch, int(i), "refine", exc)
        return
    per = (time.perf_counter() - t0) / len(rows)
    amplitude, phase, support = object_images(result.obj, result.support, side)
    for j, i in enumerate(rows):
        error = result.errors[j]
        if error is not None:
            _fail_in_batch(batch, int(i), "refine", error)
            continue
        batch["amplitude"][i] = amplitude[j]
        batch["phase"][i] = phase[j]
        batch["support"][i] = support[j]
        batch["chi2_curve"][i] = result.chi2[j].numpy()
        batch["refined_chi2"][i] = float(result.best_chi2[j])
        batch["upper_bound"][i] = side
        batch["t_refine"][i] = per


def object_images(obj, support, side: int):
    """Amplitude, phase (radians) and support of the central ``side`` x ``side`` box.

    Parameters
    ----------
    obj : (B, P, P) complex tensor, centred; support : (B, P, P) bool tensor.

    Returns
    -------
    (B, S, S) float32 amplitude, float32 phase, bool support as numpy arrays, with
    S = ``RESULT_SIZE``: the box is zero-padded or cropped to it, so every scan's images
    have one shape whatever its upper bound.
    """
    import torch

    from cdiflow.physics.fft import crop_centre, pad_centre

    box = crop_centre(obj, side)
    # Phase retrieval fixes the object only up to a global phase: remove it (phase of
    # the sum set to 0) so images and unwrapping start from 0.
    box = box * torch.exp(-1j * torch.angle(box.sum((-2, -1), keepdim=True)))
    box = _to_size(box, RESULT_SIZE, crop_centre, pad_centre)
    mask = _to_size(crop_centre(support, side), RESULT_SIZE, crop_centre, pad_centre)
    return box.abs().numpy(), box.angle().numpy(), mask.numpy().astype(bool)


def _to_size(x, size: int, crop, pad):
    return crop(x, size) if x.shape[-1] >= size else pad(x, size)


# --- 5. results ----------------------------------------------------------------------------


def unwrapped_phase(phase: np.ndarray, support: np.ndarray) -> np.ndarray:
    """Unwrap a (N, N) phase inside ``support`` (Herraez et al. 2002, skimage); NaN outside."""
    from skimage.restoration import unwrap_phase

    if not support.any():
        return np.full(phase.shape, np.nan, np.float32)
    masked = np.ma.masked_array(phase.astype(np.float64), mask=~support)
    unwrapped = unwrap_phase(masked)
    values = np.ma.filled(unwrapped, np.nan).astype(np.float32)
    inside = values[support]
    values -= np.float32(np.round(np.nanmedian(inside) / (2 * np.pi)) * 2 * np.pi)
    return values


SUMMARY_SCALARS = (
    "scan",
    "key",
    "number",
    "source",
    "status",
    "reason",
    "error_kind",
    "stage",
    "cnn_chi2",
    "refined_chi2",
    "oversampling_y",
    "oversampling_x",
    "upper_bound",
    "frames",
    "raw_bytes",
    "t_read",
    "t_preprocess",
    "t_cnn",
    "t_refine",
)


def summary_of(row: dict) -> dict:
    """The summary-table part of a row (plain Python scalars)."""
    out = {}
    for name in SUMMARY_SCALARS:
        value = row[name]
        out[name] = value.item() if isinstance(value, np.generic) else value
    return out


def finish_scan(row: dict, out: str | Path, provenance: dict[str, Any]) -> dict:
    """Write an ok scan's HDF5 result and PNG preview; return its summary row.

    ``provenance`` holds ``reconstruction`` (config dict), ``git_sha`` and anything else
    the job records. A failure while writing fails the scan (it is redone on a re-run);
    failed scans write nothing.
    """
    summary = summary_of(row)
    summary.update(t_write=0.0, result="", preview="", skipped=False)
    if row["status"] != "ok":
        return summary
    t0 = time.perf_counter()
    try:
        summary.update(_write_outputs(row, Path(out), provenance, summary))
    except Exception as exc:  # noqa: BLE001 - e.g. a full disk: this scan fails, others go on
        summary.update(status="failed", stage="write", reason=_reason(exc), error_kind=_kind(exc))
        summary.update(result="", preview="")
        traceback.print_exc()
    summary["t_write"] = time.perf_counter() - t0
    return summary


def _write_outputs(row: dict, out: Path, provenance: dict, summary: dict) -> dict:
    from cdiflow.reports.beamtime import save_preview

    key = row["key"]
    h5_path = result_path(out, SCANS_DIR, key, ".h5")
    png_path = result_path(out, PREVIEWS_DIR, key, ".png")
    support = np.asarray(row["support"], bool)
    unwrapped = unwrapped_phase(np.asarray(row["phase"]), support)
    relative = {
        "result": h5_path.relative_to(out.resolve()).as_posix(),
        "preview": png_path.relative_to(out.resolve()).as_posix(),
    }
    save_preview(
        png_path,
        np.asarray(row["amplitude"]),
        unwrapped,
        np.asarray(row["modulus"]),
        title=f"{row['scan']}  chi2 {row['refined_chi2']:.3g}",
    )
    stored = dict(summary, **relative, t_write=0.0, skipped=False)
    write_scan_result(
        h5_path,
        arrays={
            "amplitude": np.asarray(row["amplitude"], np.float32),
            "phase": np.asarray(row["phase"], np.float32),
            "phase_unwrapped": unwrapped,
            "support": support,
            "chi2": np.asarray(row["chi2_curve"], np.float32),
            "modulus": np.asarray(row["modulus"], np.float32),
            "mask": np.asarray(row["mask"], bool),
            "cnn_amplitude": np.asarray(row["cnn_amplitude"], np.float32),
            "cnn_phase": np.asarray(row["cnn_phase"], np.float32),
        },
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
            "cdiflow_version": __version__,
            "git_sha": provenance.get("git_sha") or "unknown",
            "phase_units": "radians",
            "convention": "centred arrays (cdiflow.physics.fft); phase global offset removed",
        },
    )
    return relative


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
    import uuid

    token = uuid.uuid4().hex  # a fresh discovery / calibration cache for this run
    rows = [read_and_preprocess(item, config, token) for item in items]
    summaries = []
    for start in range(0, len(rows), config.refine_batch):
        batch = rows_to_batch(rows[start : start + config.refine_batch])
        batch = predict_batch(model, batch, model_info, device)
        batch = refine_batch(batch, config, device)
        summaries += [finish_scan(row, out, provenance) for row in batch_to_rows(batch)]
    return summaries
