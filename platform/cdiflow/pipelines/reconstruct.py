"""The beamtime job on Ray Data: read -> preprocess -> CNN actors -> refinement -> results.

::

    scan items (driver: plan, skip finished)
      -> map(read_and_preprocess)             tasks, one scan per block
      -> map_batches(CNNPredictor)            actor pool; model loaded once per actor;
                                              GPU when the cluster has one, else 0.5 CPU
      -> map_batches(refine_batch/Refiner)    CPU tasks, or GPU actors, batched
      -> map(finish_scan)                     HDF5 + PNG per scan, returns summary rows
    driver: progress lines, summary.parquet / summary.csv, report.html

The per-scan work lives in ``cdiflow.beamtime.steps`` (plain functions); this
module is the glue. Which model runs is settled in ``reconstruct_model``; the progress
lines, tables and report come from ``reconstruct_tables``. Resumable: a scan whose
result file is complete, and was made by the same model version, reconstruction config
(``config_hash``) and input (fingerprint of its files' sizes, mtimes and paths), is not
read again: its row comes from that file (``reconstruct_plan``). Any other finished scan
is redone, and its progress line says why ("model changed", "config changed", "input
changed", "--force"). One bad scan never stops the job: it gets a failed row.

Note for multi-node clusters: the writers run on the workers, so ``--out`` must be on
storage that every node sees (NFS), like Ray Train's ``storage_path``.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cdiflow import __version__
from cdiflow.beamtime.steps import (
    ReconstructConfig,
    finish_scan,
    predict_batch,
    read_and_preprocess,
    refine_batch,
    run_items_locally,
)
from cdiflow.errors import OutputDirError
from cdiflow.models import inference_model
from cdiflow.pipelines.cluster import connect, use_assigned_cpus
from cdiflow.pipelines.reconstruct_model import pin_model, resolve_model
from cdiflow.pipelines.reconstruct_plan import RunPlan, plan_run
from cdiflow.pipelines.reconstruct_tables import (
    BeamtimeOutcome,
    plan_line,
    progress_line,
    write_tables,
)
from cdiflow.pipelines.tracking import git_sha, load_model, model_reference

__all__ = [  # pin_model ... model_reference: re-exported, callers import them from here
    "ACTOR_CPUS",
    "BeamtimeOutcome",
    "CNNPredictor",
    "Refiner",
    "model_reference",
    "pin_model",
    "reconstruct_beamtime",
    "refine_task",
    "resolve_model",
    "run_pipeline",
]

ACTOR_CPUS = 0.5  # fractional: a pool that takes every CPU starves the read tasks (hangs)


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
    """Ray Data task for CPU refinement on the task's CPUs: one single-threaded engine
    worker per CPU (``refine_batch(threads=...)``)."""
    threads = use_assigned_cpus()
    return refine_batch(batch, config, "cpu", threads=threads if threads > 1 else None)


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
    info = json.dumps(model_info, sort_keys=True, default=str)
    ds = _predict_stage(ds, config, model_ref, tracking_uri, info, device, cnn_actors)
    ds = _refine_stage(ds, config, device)
    kwargs = {"out": str(out), "provenance": provenance, "figures": config.figures}
    ds = ds.map(finish_scan, fn_kwargs=kwargs, num_cpus=0.25)
    rows = []
    for row in ds.iter_rows():
        row = {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
        rows.append(row)
        progress(progress_line(len(rows), len(todo), row, redone or {}))
    return rows


def _predict_stage(ds, config, model_ref, tracking_uri, model_info: str, device, actors: int):
    """The CNN stage: a pool of ``CNNPredictor`` actors, each loading the model once.

    On a GPU cluster each actor takes a quarter of a GPU; on CPUs, ``ACTOR_CPUS``.
    """
    import ray

    gpu = device == "cuda"
    resources = {"num_gpus": 0.25, "num_cpus": 0.25} if gpu else {"num_cpus": ACTOR_CPUS}
    return ds.map_batches(
        CNNPredictor,
        fn_constructor_kwargs={
            "model_ref": model_ref,
            "tracking_uri": tracking_uri,
            "model_info": model_info,
            "device": device,
            "config": config,
        },
        batch_size=config.cnn_batch,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=actors),
        **resources,
    )


def _refine_stage(ds, config: ReconstructConfig, device: str):
    """The refinement stage: one ``Refiner`` actor on a GPU (it keeps its CUDA context),
    else plain one-CPU ``refine_task`` tasks."""
    import ray

    if device == "cuda":
        return ds.map_batches(
            Refiner,
            fn_constructor_kwargs={"config": config, "device": device},
            batch_size=config.refine_batch,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=1),
            num_gpus=0.5,
            num_cpus=0.25,
        )
    return ds.map_batches(
        refine_task,
        fn_kwargs={"config": config},
        batch_size=config.refine_batch,
        batch_format="numpy",
        num_cpus=1,
    )


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
    plan = plan_run(sources, selection, model, workspace, out, config, force)
    started = bool(plan.todo) and runner != "local" and _connect_ray(address)
    try:
        _make_out(out)
        progress(plan_line(len(plan.items), len(plan.done), len(plan.todo), plan.redone))
        new_rows = _run_todo(plan, out, config, progress, runner, cnn_actors)
    finally:
        if started:
            import ray

            ray.shutdown()  # only the local Ray this call started
    rows = [plan.done.get(i["key"]) or new_rows[i["key"]] for i in plan.items]
    seconds = time.perf_counter() - t0
    info, processed = plan.model_info, len(plan.todo)
    return write_tables(out, rows, sources, info, config, seconds, processed, plan.done)


def _run_todo(plan: RunPlan, out, config, progress, runner: str, cnn_actors: int) -> dict:
    """Run the planned scans (on Ray, or in this process): key -> summary row."""
    provenance = _provenance(config, plan.model_version)
    if not plan.todo:
        return {}
    progress(f"model {plan.model_info['pinned_ref']}")
    run = _run_locally if runner == "local" else run_pipeline
    rows = run(
        plan.todo,
        out,
        config,
        plan.pinned,
        plan.uri,
        plan.model_info,
        provenance,
        progress,
        cnn_actors,
        plan.redone,
    )
    return {r["key"]: r for r in rows}


def _provenance(config: ReconstructConfig, model_version: str) -> dict[str, Any]:
    """What every result file of this run records about how it was made."""
    return {
        "reconstruction": config.to_dict(),
        "model_version": model_version,
        "config_hash": config.config_hash,
        "git_sha": git_sha(),
        "cdiflow_version": __version__,
    }


def _run_locally(
    todo, out, config, model_ref, uri, model_info, provenance, progress, cnn_actors, redone
):
    """``run_pipeline``'s steps in this process, no Ray (one CPU model; ``cnn_actors``
    is taken for the same call shape and unused)."""
    predictor = CNNPredictor(model_ref, uri, "{}", "cpu")
    info = json.dumps(model_info, sort_keys=True, default=str)
    rows = run_items_locally(todo, predictor.model, config, out, provenance, info)
    for k, row in enumerate(rows):
        progress(progress_line(k + 1, len(todo), row, redone))
    return rows


def _connect_ray(address: str | None) -> bool:
    """Connect to Ray unless this process already is; True when a local Ray was started.

    Raises ``ClusterUnavailable`` (an address that does not answer) or ``ConfigError``.
    """
    import ray

    return not ray.is_initialized() and connect(address).address == "local"
