"""Ray Train glue: the per-worker function and the driver around the pure-PyTorch loop.

Three layers (as in Ray's own examples):

1. ``cdiflow.train``: the loop over an iterable of batches (no Ray).
2. ``train_worker`` (``train_worker.py``): runs on every Train worker. It takes its
   shard of the training set (``get_dataset_shard``), prepares the model for DDP, runs one
   epoch of the pure loop, evaluates on the whole validation split on rank 0, and reports
   metrics plus a checkpoint every epoch. ``ray.train.report`` is a collective: every
   rank calls it, only rank 0 passes the checkpoint. It resumes from
   ``ray.train.get_checkpoint()``, which is how a restarted worker group
   (``FailureConfig``) and ``--resume`` continue.
3. ``run_training``: the driver. It validates the dataset and the resources before any
   training, builds Ray Data datasets from the shard paths, runs the ``TorchTrainer``
   (gloo on CPU, nccl on GPU), then registers the final weights and applies the
   champion rule, with the val split's fingerprint; a champion scored on another val
   split is rescored on this one first (``champion_rescorer``; ``train_result.py``).

The data are a data set folder (or URI), or a ``DatasetConfig`` to generate on the fly
(``cdiflow train --generate N``: ``train_stream.py``, no disk). Masked data (the
realistic preset) train a model with ``mask_channel`` (``train_config.for_data``).

The job's typed config lives in ``train_config.py``; this module re-exports it.

Ray, MLflow and torch are imported inside functions, so importing this module is free.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING

from cdiflow.config import require
from cdiflow.errors import CdiflowError, InputError
from cdiflow.formats.location import Location
from cdiflow.pipelines.cluster import train_env_defaults
from cdiflow.pipelines.data import has_mask, list_shards, validate_split
from cdiflow.pipelines.tracking_store import (
    RunLogger,
    configure,
    experiment_id,
    is_embedded,
    tracking_uri,
)
from cdiflow.pipelines.train_config import (
    RUN_FILE,
    SCORE_METRIC,
    STATE_FILE,
    WEIGHTS_FILE,
    RunSettings,
    ScalingSettings,
    TrainJobConfig,
    check_resources,
    for_data,
    steps_per_epoch,
)
from cdiflow.pipelines.train_result import (
    TrainOutcome,
    champion_rescorer,
    eval_fingerprint,
    finish_run,
    finish_training,
)
from cdiflow.pipelines.train_worker import build_trainer, train_worker

if TYPE_CHECKING:
    from cdiflow.formats.layout import DatasetConfig

__all__ = [
    "RUN_FILE",
    "SCORE_METRIC",
    "STATE_FILE",
    "WEIGHTS_FILE",
    "RunSettings",
    "ScalingSettings",
    "TrainJobConfig",
    "TrainOutcome",
    "TrainingFailed",
    "build_trainer",
    "champion_rescorer",
    "check_dataset",
    "check_resources",
    "eval_fingerprint",
    "for_data",
    "run_training",
    "steps_per_epoch",
    "train_worker",
]


class TrainingFailed(CdiflowError):
    """Ray Train gave up (worker failures beyond ``run.max_failures``, or an error)."""


def is_generated(data) -> bool:
    """True for a ``DatasetConfig`` (generated on the fly), False for a folder or URI."""
    from cdiflow.formats.layout import DatasetConfig  # lazy: it imports torch; this module does not

    return isinstance(data, DatasetConfig)


def check_dataset(data: str | Path | Location | DatasetConfig) -> dict[str, int]:
    """Validate the train and val splits (before any training); their row counts.

    For generated data (a ``DatasetConfig``, valid by construction): the patterns per
    epoch and the fixed validation set.
    """
    if is_generated(data):
        return {split: data.count(split) for split in ("train", "val")}
    return {split: validate_split(data, split) for split in ("train", "val")}


def _check_tracking_reach(uri: str) -> None:
    """The embedded SQLite store is a file on this machine: multi-node runs need a server."""
    import ray

    hosts = {n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
    require(
        not is_embedded(uri) or len(hosts) <= 1,
        f"the cluster spans {len(hosts)} machines but MLflow uses the embedded SQLite store "
        f"({uri}), which only this machine can write: set MLFLOW_TRACKING_URI to an mlflow "
        "server",
    )


def _default_name() -> str:
    return time.strftime("cdiflow-train-%Y%m%d-%H%M%S", time.gmtime())


def _run_record(storage: Path, name: str) -> Path:
    return storage / f"{name}.{RUN_FILE}"


def run_training(
    job: TrainJobConfig,
    data_dir: str | Path | Location | DatasetConfig,
    workspace: str | Path,
    name: str | None = None,
    resume: bool = False,
    storage_path: str | Path | None = None,
    track: bool = True,
    rows: dict[str, int] | None = None,
) -> TrainOutcome:
    """Validate, train on Ray, register. Ray must already be initialised or connected.

    Parameters
    ----------
    job : the validated config.
    data_dir : dataset root with ``train/`` and ``val/`` shards: a folder, or an
        object-storage URI (``s3://bucket/prefix``) that every node can read; or a
        ``DatasetConfig`` to generate on the fly (new training patterns every epoch).
    workspace : folder for the embedded MLflow store and (by default) Ray's run folders.
    name : run name (Ray's run folder and the MLflow run name). ``resume`` needs it.
    resume : continue the stopped run ``name`` from its latest checkpoint.
    storage_path : where Ray keeps run folders (shared storage on multi-node clusters).
    track : log to MLflow and register; False trains only (benchmarks).
    rows : row counts from ``check_dataset`` when the caller validated already.
    """
    import ray

    stream = data_dir if is_generated(data_dir) else None
    data_dir = stream if stream is not None else Location.parse(data_dir).value
    train_rows = (rows or check_dataset(data_dir))["train"]
    check_resources(job.scaling, ray.cluster_resources())
    shards, job = _shards_and_job(job, stream, data_dir)
    workspace = Path(workspace).expanduser().resolve()
    storage, name = _run_folder(workspace, storage_path, name, resume)
    uri = run_id = None
    if track:
        _check_tracking_reach(tracking_uri(workspace))
        record = _run_record(storage, name)
        uri, run_id = _start_tracking(job, workspace, name, data_dir, record, resume)

    trainer = build_trainer(
        job,
        shards,
        train_rows=train_rows,
        tracking_uri=uri,
        run_id=run_id,
        name=name,
        storage_path=str(storage),
        stream=stream,
    )
    train_env_defaults()  # Ray Train passes it from this process to controller and workers
    result = _fit(trainer, name, uri, run_id, track)
    return finish_training(job, result, name, storage, uri, run_id, track, data_dir)


def _shards_and_job(job: TrainJobConfig, stream: DatasetConfig | None, data_dir):
    """The shard paths (None on the fly) and the job with ``mask_channel`` set for the data."""
    if stream is not None:
        workers, per_epoch = job.scaling.workers, stream.count("train")
        require(
            per_epoch >= workers,
            f"--generate gives {per_epoch} training patterns per epoch, fewer than the "
            f"{workers} workers",
        )
        return None, for_data(job, stream.generator.has_mask)
    shards = {split: list_shards(data_dir, split) for split in ("train", "val")}
    return shards, for_data(job, has_mask(shards["train"]))


def _run_folder(
    workspace: Path, storage_path: str | Path | None, name: str | None, resume: bool
) -> tuple[Path, str]:
    """(Ray's storage folder, run name), checked against ``resume`` and created."""
    storage = Path(storage_path).expanduser().resolve() if storage_path else workspace / "runs"
    if resume and not name:
        raise InputError("--resume needs --name of the run to continue")
    name = name or _default_name()
    exists = (storage / name).exists()
    if resume and not exists:
        raise InputError(f"no run {name!r} under {storage} to resume")
    if not resume and exists:
        raise InputError(
            f"run {name!r} already exists under {storage}; pass --resume or a new --name"
        )
    storage.mkdir(parents=True, exist_ok=True)
    return storage, name


def _fit(trainer, name: str, uri: str | None, run_id: str | None, track: bool):
    """Fit the trainer; a failed run ends its MLflow run and raises ``TrainingFailed``."""
    import ray.train

    try:
        result = trainer.fit()  # raises the run's error (V2); result.error for older APIs
        if result.error is not None:
            raise result.error
    except (
        ray.train.ControllerError,
        ray.train.WorkerGroupError,
        ray.train.TrainingFailedError,
    ) as exc:
        if track:
            finish_run(uri, run_id, "FAILED")
        reason = str(exc).strip().splitlines()
        raise TrainingFailed(
            f"run {name!r} failed ({type(exc).__name__}: {reason[0] if reason else ''}); "
            f"fix the cause and re-run with --resume --name {name}"
        ) from exc
    return result


def _start_tracking(job, workspace, name, data_dir, record: Path, resume: bool):
    uri = configure(workspace)
    if resume and record.is_file():
        run_id = json.loads(record.read_text())["run_id"]
        RunLogger(uri, run_id).client.update_run(run_id, status="RUNNING")
        return uri, run_id
    exp = experiment_id(uri, job.run.experiment, workspace=workspace)
    config, seeds, tags = _data_record(job, data_dir)
    logger = RunLogger.start(uri, exp, name, config, seeds, tags={**tags, "ray_run": name})
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"run_id": logger.run_id, "tracking_uri": uri}))
    return uri, logger.run_id


def _data_record(job: TrainJobConfig, data) -> tuple[dict, dict, dict]:
    """(params, seeds, tags) of a run: the job, plus the generated data's config on the fly."""
    seeds = {"train": job.train.seed}
    if is_generated(data):
        seeds["data"] = data.seed
        return {**job.to_dict(), "data": data.to_dict()}, seeds, {"data_dir": "generated"}
    manifest = Location.parse(data) / "manifest.json"
    if manifest.is_file():
        seed = json.loads(manifest.read_text()).get("seed")
        if isinstance(seed, int):
            seeds["data"] = seed
    return job.to_dict(), seeds, {"data_dir": str(Location.parse(data).resolve())}
