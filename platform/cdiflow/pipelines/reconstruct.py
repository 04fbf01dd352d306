"""The beamtime job on Ray Data: read -> preprocess -> CNN actors -> refinement -> results.

::

    scan items (driver: plan, skip finished)
      -> map(read_and_preprocess)             tasks, one scan per block
      -> map_batches(CNNPredictor)            actor pool; model loaded once per actor;
                                              GPU when the cluster has one, else 0.5 CPU
      -> map_batches(refine_batch/Refiner)    CPU tasks, or GPU actors, batched
      -> map(finish_scan)                     HDF5 + PNG per scan, returns summary rows
    driver: progress lines, summary.parquet / summary.csv, report.html

The per-scan work lives in ``cdiflow.pipelines.scan_steps`` (plain functions); this
module is the glue. Resumable: a scan whose result file is complete, and was made by
the same model version, reconstruction config (``config_hash``) and input (fingerprint
of its files' sizes, mtimes and paths), is not read again: its row comes from that
file. Any other finished scan is redone, and its progress line says why ("model
changed", "config changed", "input changed", "--force"). One bad scan never stops the
job: it gets a failed row.

Note for multi-node clusters: the writers run on the workers, so ``--out`` must be on
storage that every node sees (NFS), like Ray Train's ``storage_path``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cdiflow import __version__, pretrained
from cdiflow.errors import ModelNotFound, OutputDirError
from cdiflow.formats.dataset import file_sha256
from cdiflow.formats.results import (
    SCANS_DIR,
    read_completed_summary,
    result_path,
    stale_reason,
    write_summary,
)
from cdiflow.models import inference_model
from cdiflow.pipelines.cluster import connect, use_assigned_cpus
from cdiflow.pipelines.scan_steps import (
    ReconstructConfig,
    finish_scan,
    plan_scans,
    predict_batch,
    read_and_preprocess,
    refine_batch,
    run_items_locally,
)
from cdiflow.pipelines.tracking import (
    DEFAULT_MODEL,
    configure,
    git_sha,
    load_model,
    model_reference,
    resolve_version,
)
from cdiflow.reports.beamtime import write_report

ACTOR_CPUS = 0.5  # fractional: a pool that takes every CPU starves the read tasks (hangs)


@dataclasses.dataclass(frozen=True)
class BeamtimeOutcome:
    """What a run did."""

    out: Path
    rows: list[dict[str, Any]]
    summary_parquet: Path
    summary_csv: Path
    report: Path
    seconds: float
    processed: int  # scans run through the pipeline this time
    skipped: int  # scans whose finished result was kept

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "ok"]

    @property
    def suspect(self) -> list[dict[str, Any]]:
        """Finished scans whose verdict is ``suspect: <reason>`` (``scan_verdict``)."""
        return [r for r in self.ok if str(r.get("verdict") or "").startswith("suspect")]


def pin_model(ref: str | None, workspace: str | Path) -> tuple[str, str | None, str]:
    """Pin the model without loading it: (reference to load, tracking URI, model version).

    The model version is what a finished result must have been made with to be kept:
    ``sha256:<hex>`` of a weights file, or ``models:/NAME/VERSION`` for a registry
    reference, whose alias is resolved here to its current version (the reference
    returned), so every actor of the job loads the same weights even if the alias moves
    while the job runs. A weights file that does not exist gets version "" (it matches
    no result; loading it then raises ``ModelNotFound``).

    Raises
    ------
    ModelNotFound : an unknown registry model, or a workspace without a store.
    """
    text = model_reference(ref)
    if not text.startswith("models:/"):  # a weights file needs no store
        path = Path(text)
        return text, None, f"sha256:{file_sha256(path)}" if path.is_file() else ""
    _check_store(workspace, text)
    uri = configure(workspace)
    version = resolve_version(uri, text)
    pinned = f"models:/{version.name}/{version.version}"
    return pinned, uri, pinned


def resolve_model(ref: str | None, uri: str | None) -> tuple[str, dict[str, Any]]:
    """Check the model exists and pin it: (reference the actors load, provenance).

    A registry alias is pinned to its current version, so every actor of the job loads
    the same weights even if the alias moves while the job runs.
    """
    text = model_reference(ref)
    _, config, provenance = load_model(text, uri)
    pinned = text
    if text.startswith("models:/") and provenance.get("version"):
        pinned = f"models:/{provenance['name']}/{provenance['version']}"
    info = {k: v for k, v in provenance.items() if k != "tags"}
    info["metrics"] = dict(provenance.get("tags", {}))
    info["pinned_ref"] = pinned
    info["config"] = config.to_dict()
    return pinned, info


class CNNPredictor:
    """Ray Data actor: loads the model once, then predicts batch after batch."""

    def __init__(
        self,
        model_ref: str,
        tracking_uri: str | None,
        model_info: str,
        device: str,
        config: ReconstructConfig | None = None,
    ):
        use_assigned_cpus()
        model, _, _ = load_model(model_ref, tracking_uri)
        self.device = device
        self.model = inference_model(model).to(device)
        self.model_info = model_info
        self.config = config  # its ``adapt`` settings, when the CNN is adapted per scan

    def __call__(self, batch: dict) -> dict:
        import torch

        # scoped, not torch.set_grad_enabled(False): in-process runs share the thread
        with torch.inference_mode():
            return predict_batch(self.model, batch, self.model_info, self.device, self.config)


def refine_task(batch: dict, config: ReconstructConfig) -> dict:
    """Ray Data task for CPU refinement: torch threads = the task's CPUs, then refine."""
    use_assigned_cpus()
    return refine_batch(batch, config, "cpu")


class Refiner:
    """Ray Data actor for GPU refinement (keeps the CUDA context between batches)."""

    def __init__(self, config: ReconstructConfig, device: str):
        use_assigned_cpus()
        self.config = config
        self.device = device

    def __call__(self, batch: dict) -> dict:
        return refine_batch(batch, self.config, self.device)


def _check_out(out: str | Path) -> Path:
    """``--out`` as an absolute path, refused when it is a file; creates nothing."""
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise OutputDirError(f"--out {out} exists and is not a folder")
    return out.resolve()


def _make_out(out: Path) -> None:
    """Create ``--out`` (once every input was checked: bad input leaves no folder)."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputDirError(f"cannot create --out {out}: {exc.strerror or exc}") from None


def _check_store(workspace: str | Path, ref: str) -> None:
    """Refuse a registry model when the workspace has no embedded store yet.

    Looking it up would create the workspace and an empty store (with MLflow's log lines
    on stderr) only to find no model; ``ModelNotFound`` says what to pass instead.
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return  # a server (or a store named there) is looked up as it is
    if ref == DEFAULT_MODEL and pretrained.available():
        return  # a new workspace registers the shipped model as its champion
    root = Path(workspace).expanduser().resolve()
    if not (root / "mlflow.db").is_file():  # the store of tracking.tracking_uri
        raise ModelNotFound(
            f"{ref} not found: --workspace {root} has no MLflow store (mlflow.db); "
            "pass the workspace that registered it, set MLFLOW_TRACKING_URI, or give "
            "--model a weights file"
        )


def _finished_rows(
    items: list[dict], out: Path, model_version: str, config_hash: str, force: bool
) -> tuple[dict[str, dict], dict[str, str]]:
    """Scans finished earlier: (key -> summary row kept, key -> why the scan is redone).

    A complete result is kept (skipped on this run) only when the model version, config
    hash and input fingerprint it recorded are this run's (``stale_reason``) and its
    ``.cxi`` copy exists (a result from before cdiflow wrote CXI files is redone); with
    ``force`` none is kept.
    """
    done, redo = {}, {}
    for item in items:
        row = read_completed_summary(result_path(out, SCANS_DIR, item["key"], ".h5"))
        if row is None:
            continue
        expected = {
            "model_version": model_version,
            "config_hash": config_hash,
            "input_fingerprint": item["input_fingerprint"],
        }
        why = "--force" if force else stale_reason(row, expected)
        if not why and not result_path(out, SCANS_DIR, item["key"], ".cxi").is_file():
            why = "no CXI result"
        if why:
            redo[item["key"]] = why
        else:
            done[item["key"]] = dict(row, skipped=True)
    return done, redo


def _progress_line(count: int, total: int, row: dict, redone: dict[str, str]) -> str:
    if row["status"] == "ok":
        what = f"ok  CNN chi2 {row['cnn_chi2']:.3g}  refined chi2 {row['refined_chi2']:.3g}"
        what += f"  {row['verdict']}" if row.get("verdict", "ok") != "ok" else ""
    else:
        what = f"FAILED ({row['stage']}: {row['reason']})"
    why = redone.get(row["key"])
    return f"[{count}/{total}] {row['scan']}: {what}" + (f"  (redone: {why})" if why else "")


def _plan_line(total: int, done: int, todo: int, redone: dict[str, str]) -> str:
    line = f"{total} scan(s): {done} already finished, {todo} to reconstruct"
    if redone:
        counts = Counter(redone.values())
        line += " (redone: " + "; ".join(f"{n} {why}" for why, n in counts.items()) + ")"
    return line


def run_pipeline(
    todo: list[dict],
    out: Path,
    config: ReconstructConfig,
    model_ref: str,
    tracking_uri: str | None,
    model_info: dict,
    provenance: dict,
    progress: Callable[[str], None],
    cnn_actors: int = 1,
    redone: dict[str, str] | None = None,
) -> list[dict]:
    """Run the Ray Data pipeline over ``todo`` items; return their summary rows.

    ``redone`` maps the key of a scan finished earlier to why it is redone (its
    progress line says so).
    """
    import ray

    gpus = ray.cluster_resources().get("GPU", 0) > 0
    device = "cuda" if gpus else "cpu"
    token = uuid.uuid4().hex  # scopes per-worker caches (discovery, calibration) to this run
    ds = ray.data.from_items(todo, override_num_blocks=max(1, len(todo)))
    ds = ds.map(
        read_and_preprocess,
        fn_kwargs={"config": config, "token": token, "iterations": config.iterations},
        num_cpus=0.5,
    )
    resources = {"num_gpus": 0.25, "num_cpus": 0.25} if gpus else {"num_cpus": ACTOR_CPUS}
    ds = ds.map_batches(
        CNNPredictor,
        fn_constructor_kwargs={
            "model_ref": model_ref,
            "tracking_uri": tracking_uri,
            "model_info": json.dumps(model_info, sort_keys=True, default=str),
            "device": device,
            "config": config,
        },
        batch_size=config.cnn_batch,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=cnn_actors),
        **resources,
    )
    if gpus:
        ds = ds.map_batches(
            Refiner,
            fn_constructor_kwargs={"config": config, "device": device},
            batch_size=config.refine_batch,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=1),
            num_gpus=0.5,
            num_cpus=0.25,
        )
    else:
        ds = ds.map_batches(
            refine_task,
            fn_kwargs={"config": config},
            batch_size=config.refine_batch,
            batch_format="numpy",
            num_cpus=1,
        )
    ds = ds.map(finish_scan, fn_kwargs={"out": str(out), "provenance": provenance}, num_cpus=0.25)
    rows = []
    for row in ds.iter_rows():
        row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        rows.append(row)
        progress(_progress_line(len(rows), len(todo), row, redone or {}))
    return rows


def reconstruct_beamtime(
    sources: list[str | Path],
    out: str | Path,
    *,
    model: str | None = None,
    workspace: str | Path = ".",
    config: ReconstructConfig | None = None,
    selection: list[int] | None = None,
    address: str | None = None,
    progress: Callable[[str], None] | None = None,
    cnn_actors: int = 1,
    runner: str = "ray",
    force: bool = False,
) -> BeamtimeOutcome:
    """Reconstruct every selected scan of ``sources`` into ``out`` (module docstring).

    Parameters
    ----------
    sources : beamtime folders (34-ID-C), folders of scan files, or single scan sources.
    out : output folder (created); scans finished in it with the same model version,
        config hash and input fingerprint are skipped, other finished ones redone.
    model : registry alias / version / ``models:/`` URI, or a weights file (default:
        ``models:/cdiflow-cnn@champion``).
    workspace : holds the embedded MLflow store (unless ``MLFLOW_TRACKING_URI`` is set).
    config : reconstruction settings (schedule, start, preprocessing, batch sizes).
    selection : scan numbers (``parse_scan_selection("54,60-80")``); None: all.
    address : Ray cluster address; None: ``RAY_ADDRESS`` or a small local Ray. A Ray
        already initialised in this process is used as is.
    progress : called with one line per finished scan (default: print to stderr).
    runner : ``"ray"`` (the job) or ``"local"`` (the same steps in this process, no
        Ray: for debugging and tests).
    force : redo every scan, finished or not (``--force``).

    Raises
    ------
    ModelNotFound, OutputDirError, ClusterUnavailable, ConfigError : before any scan runs;
    ``out`` is created only after ``out`` and the model were checked, so a bad model
    reference leaves no empty folder behind.
    """
    progress = progress or (lambda line: print(line, file=sys.stderr, flush=True))
    config = config or ReconstructConfig()
    out = _check_out(out)
    t0 = time.perf_counter()
    items = plan_scans([str(s) for s in sources], selection)
    # the model is pinned (not loaded) first: a finished scan is kept only if it matches
    pinned, uri, model_version = pin_model(model, workspace) if items else ("", None, "")
    done, redone = _finished_rows(items, out, model_version, config.config_hash, force)
    todo = [i for i in items if i["key"] not in done]
    new_rows: dict[str, dict] = {}
    model_info: dict[str, Any] = {}
    if todo:  # the model and the cluster are checked before anything is written
        pinned, model_info = resolve_model(pinned, uri)
        model_info.update(ref=model_reference(model), model_version=model_version)
    started = bool(todo) and runner != "local" and _connect_ray(address)
    try:
        _make_out(out)
        progress(_plan_line(len(items), len(done), len(todo), redone))
        provenance = {
            "reconstruction": config.to_dict(),
            "model_version": model_version,
            "config_hash": config.config_hash,
            "git_sha": git_sha(),
            "cdiflow_version": __version__,
        }
        if todo:
            progress(f"model {model_info['pinned_ref']}")
            if runner == "local":
                rows = _run_locally(
                    todo, out, config, pinned, uri, model_info, provenance, progress, redone
                )
            else:
                rows = run_pipeline(
                    todo,
                    out,
                    config,
                    pinned,
                    uri,
                    model_info,
                    provenance,
                    progress,
                    cnn_actors,
                    redone,
                )
            new_rows = {r["key"]: r for r in rows}
    finally:
        if started:
            import ray

            ray.shutdown()  # only the local Ray this call started
    all_rows = [done.get(i["key"]) or new_rows[i["key"]] for i in items]
    seconds = time.perf_counter() - t0
    return _write_tables(out, all_rows, sources, model_info, config, seconds, len(todo), done)


def _run_locally(todo, out, config, model_ref, uri, model_info, provenance, progress, redone):
    predictor = CNNPredictor(model_ref, uri, "{}", "cpu")
    info = json.dumps(model_info, sort_keys=True, default=str)
    rows = run_items_locally(todo, predictor.model, config, out, provenance, info)
    for k, row in enumerate(rows):
        progress(_progress_line(k + 1, len(todo), row, redone))
    return rows


def _connect_ray(address: str | None) -> bool:
    """Connect to Ray unless this process already is; True when a local Ray was started.

    Raises ``ClusterUnavailable`` (an address that does not answer) or ``ConfigError``.
    """
    import ray

    return not ray.is_initialized() and connect(address).address == "local"


def _write_tables(out, rows, sources, model_info, config, seconds, processed, done):
    parquet, csv = write_summary(out, rows)
    header = {
        "sources": ", ".join(str(s) for s in sources),
        "model": model_info.get("pinned_ref", "(no scan run this time)"),
        "start": config.start,
        "starts per scan": config.starts,
        "schedule": config.schedule,
        "config hash": config.config_hash,
        "cdiflow": __version__,
        "wall time, s": round(seconds, 1),
        "skipped (finished earlier)": len(done),
    }
    report = write_report(out, rows, header)
    return BeamtimeOutcome(
        out=out,
        rows=rows,
        summary_parquet=parquet,
        summary_csv=csv,
        report=report,
        seconds=seconds,
        processed=processed,
        skipped=len(done),
    )
