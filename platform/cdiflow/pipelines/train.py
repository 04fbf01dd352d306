"""Ray Train glue: the per-worker function and the driver around the pure-PyTorch loop.

Three layers (as in Ray's own examples):

1. ``cdiflow.train``: the loop over an iterable of batches (no Ray).
2. ``train_worker``: runs on every Train worker. It takes its shard of the training set
   (``get_dataset_shard``), prepares the model for DDP, runs one epoch of the pure loop,
   evaluates on the whole validation split on rank 0, and reports metrics plus a
   checkpoint every epoch. ``ray.train.report`` is a collective: every rank calls it, only
   rank 0 passes the checkpoint. It resumes from ``ray.train.get_checkpoint()``, which is
   how a restarted worker group (``FailureConfig``) and ``--resume`` continue.
3. ``run_training``: the driver. It validates the dataset and the resources before any
   training, builds Ray Data datasets from the shard paths, runs the ``TorchTrainer``
   (gloo on CPU, nccl on GPU), then registers the final weights and applies the
   champion rule, with the val split's fingerprint; a champion scored on another val
   split is rescored on this one first (``champion_rescorer``).

Ray, MLflow and torch are imported inside functions, so importing this module is free.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import time
from pathlib import Path
from typing import Any

from cdiflow.config import Config, require
from cdiflow.errors import CdiflowError, ConfigError, InputError
from cdiflow.formats.location import Location

STATE_FILE = "state.pt"  # model/optimizer/scheduler state + epoch, tensors only
WEIGHTS_FILE = "model.pt"  # ``save_weights`` file: what gets registered
RUN_FILE = "cdiflow-run.json"  # beside Ray's run folder: the MLflow run id, for --resume
SCORE_METRIC = "val_chi2"  # the champion score: validation modulus chi^2 (eq. 5), mean


class TrainingFailed(CdiflowError):
    """Ray Train gave up (worker failures beyond ``run.max_failures``, or an error)."""


@dataclasses.dataclass(frozen=True)
class ScalingSettings(Config):
    """How many Train workers and on what.

    workers : number of DDP workers (processes).
    use_gpu : one GPU per worker, nccl and bf16 autocast; otherwise CPU, gloo, fp32.
    cpus_per_worker : CPU share of a worker. Fractions below 1 leave room for Ray Data's
        read tasks (2 workers x 1 CPU on a 2-CPU node starve the reads and hang).
    torch_threads : intra-op threads per CPU worker (0: max(1, round(cpus_per_worker))).
    autoscaling : the cluster adds nodes on demand, so ask for more than it has now.
    """

    workers: int = 1
    use_gpu: bool = False
    cpus_per_worker: float = 0.5
    torch_threads: int = 0
    autoscaling: bool = False

    def validate(self) -> None:
        require(self.workers >= 1, f"scaling.workers must be >= 1, got {self.workers}")
        require(
            self.cpus_per_worker > 0,
            f"scaling.cpus_per_worker must be > 0, got {self.cpus_per_worker}",
        )
        require(self.torch_threads >= 0, "scaling.torch_threads must be >= 0")


@dataclasses.dataclass(frozen=True)
class RunSettings(Config):
    """Fault tolerance, checkpoints and what happens to the result.

    max_failures : worker-group restarts from the latest checkpoint before giving up.
    checkpoints_to_keep : newest checkpoints kept in the run folder (one per epoch).
    experiment : MLflow experiment name.
    register : register the final weights as a version of ``cdiflow-cnn`` and apply
        the champion rule.
    """

    max_failures: int = 1
    checkpoints_to_keep: int = 2
    experiment: str = "cdiflow"
    register: bool = True

    def validate(self) -> None:
        require(self.max_failures >= -1, "run.max_failures must be >= -1 (-1: unlimited)")
        require(self.checkpoints_to_keep >= 1, "run.checkpoints_to_keep must be >= 1")
        require(bool(self.experiment), "run.experiment must not be empty")


def _model_config_type():
    from cdiflow.models import ModelConfig

    return ModelConfig


def _train_config_type():
    from cdiflow.train.config import TrainConfig

    return TrainConfig


@dataclasses.dataclass(frozen=True)
class TrainJobConfig(Config):
    """Everything ``cdiflow train`` needs; one YAML file (``configs/train.yaml``)."""

    model: Any = None  # cdiflow.models.ModelConfig
    train: Any = None  # cdiflow.train.TrainConfig
    scaling: ScalingSettings = ScalingSettings()
    run: RunSettings = RunSettings()

    def __post_init__(self) -> None:
        # nested configs owned by cdiflow.models / cdiflow.train: build them from dicts
        for name, factory in (("model", _model_config_type), ("train", _train_config_type)):
            value = getattr(self, name)
            cls = factory()
            if value is None:
                value = cls()
            elif isinstance(value, dict):
                value = cls.from_dict(value, where=name)
            elif not isinstance(value, cls):
                raise ConfigError(f"{name}: expected a mapping, got {value!r}")
            object.__setattr__(self, name, value)
        super().__post_init__()


# --- per-worker function -----------------------------------------------------------------


def _all_reduce_mean(values: dict[str, float], count: float) -> tuple[dict[str, float], float]:
    """Pattern-weighted mean of per-rank averages over all ranks (no-op without DDP)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return values, count
    keys = sorted(values)
    packed = torch.tensor([values[k] * count for k in keys] + [float(count)], dtype=torch.float64)
    dist.all_reduce(packed)
    total = float(packed[-1].item())
    return {k: float(packed[i].item()) / max(total, 1.0) for i, k in enumerate(keys)}, total


def _load_state(checkpoint) -> dict | None:
    import torch

    if checkpoint is None:
        return None
    with checkpoint.as_directory() as folder:
        return torch.load(Path(folder) / STATE_FILE, map_location="cpu", weights_only=True)


def steps_per_epoch(train_rows: int, workers: int, batch_size: int) -> int:
    """Batches per worker and epoch (Ray splits the rows equally across workers)."""
    return max(1, math.ceil((train_rows // workers) / batch_size))


def train_worker(loop_config: dict) -> None:
    """Body of every Ray Train worker (must be importable from the package).

    ``loop_config`` holds ``job`` (``TrainJobConfig.to_dict()``), ``train_rows``, and
    ``tracking_uri`` / ``run_id`` (MLflow, used by rank 0 only; None disables logging).
    Runs ``cdiflow.train.fit`` on this worker's shard; the per-epoch hook validates on
    rank 0 (the bare module, the whole validation split), checkpoints and reports.
    """
    import ray.train
    import ray.train.torch
    import torch

    from cdiflow.models import build_model, save_weights
    from cdiflow.train.loop import evaluate, fit, recalibrate_batchnorm

    job = TrainJobConfig.from_dict(loop_config["job"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    if not job.scaling.use_gpu:
        threads = job.scaling.torch_threads or max(1, round(job.scaling.cpus_per_worker))
        torch.set_num_threads(threads)

    model = build_model(job.model, seed=job.train.seed)  # same initial weights on every rank
    resume = _load_state(ray.train.get_checkpoint())
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    bare = getattr(model, "module", model)
    autocast = job.train.bf16 and device.type == "cuda"

    logger = None
    if rank == 0 and loop_config.get("run_id"):
        from cdiflow.pipelines.tracking import RunLogger

        logger = RunLogger(loop_config["tracking_uri"], loop_config["run_id"])

    train_shard = ray.train.get_dataset_shard("train")
    val_shard = ray.train.get_dataset_shard("val")

    def train_batches(epoch: int):
        return train_shard.iter_torch_batches(
            batch_size=job.train.batch_size,
            dtypes=torch.float32,
            local_shuffle_buffer_size=4 * job.train.batch_size,
            local_shuffle_seed=job.train.seed * 100_003 + epoch,  # same order on a rerun
        )

    cached_val: list = []

    def val_batches() -> list:
        # the validation split is small (5%): read it once, not through Ray Data each epoch
        if not cached_val:
            cached_val.extend(val_shard.iter_torch_batches(batch_size=256, dtypes=torch.float32))
        return cached_val

    def on_epoch_end(end) -> None:
        train = {k: v for k, v in end.metrics.items() if k.startswith("train_")}
        count = train.pop("train_patterns", 0.0)
        train.pop("train_patterns_per_s", None)
        train.pop("train_lr", None)
        train, total = _all_reduce_mean(train, count)
        seconds = end.metrics["seconds"]
        metrics: dict[str, Any] = {
            **train,
            "epoch": end.epoch,
            "lr": end.optimizer.param_groups[0]["lr"],
            "train_patterns": total,
            "samples_per_s": total / seconds if seconds > 0 else 0.0,
            "epoch_seconds": seconds,
        }
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if rank == 0:
                # Short runs leave BN running averages far behind the weights (the eval
                # model then outputs zeros); recompute them from validation *inputs* only.
                # DDP broadcasts rank 0's buffers to the others at the next forward.
                recalibrate_batchnorm(bare, val_batches(), device)
                val = evaluate(bare, val_batches(), device, job.train.loss, autocast)
                metrics.update({f"val_{k}": float(v) for k, v in val.items()})
                metrics[SCORE_METRIC] = metrics["val_chi2_modulus"]
                torch.save(end.state(), Path(folder) / STATE_FILE)
                save_weights(Path(folder) / WEIGHTS_FILE, bare, job.model)
                checkpoint = ray.train.Checkpoint.from_directory(folder)
                if logger is not None:
                    logger.log_epoch(end.epoch, metrics)
            # a collective: every rank reports, rank 0 with the checkpoint
            ray.train.report(
                metrics, checkpoint=checkpoint, checkpoint_dir_name=f"epoch-{end.epoch:05d}"
            )

    fit(
        model,
        job.train,
        train_batches,
        steps_per_epoch(loop_config["train_rows"], world, job.train.batch_size),
        device=device,
        resume=resume,
        on_epoch_end=on_epoch_end,
    )


# --- driver ---------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TrainOutcome:
    """What a training run produced."""

    name: str
    run_dir: str  # Ray's run folder (checkpoints)
    run_id: str | None  # MLflow run
    tracking_uri: str | None
    epochs_done: int
    metrics: dict[str, float]
    weights: str  # path of the final weights file (inside the last checkpoint)
    promotion: dict | None  # registry version and champion decision

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def check_resources(scaling: ScalingSettings, resources: dict[str, float]) -> None:
    """``ConfigError`` when the cluster cannot hold the workers (unless it autoscales)."""
    if scaling.autoscaling:
        return
    cpus = float(resources.get("CPU", 0))
    gpus = float(resources.get("GPU", 0))
    if scaling.use_gpu:
        require(
            scaling.workers <= gpus,
            f"scaling.workers={scaling.workers} with GPUs, but the cluster has {gpus:g} GPU(s) "
            "(set scaling.autoscaling: true if it adds nodes on demand)",
        )
    else:
        require(
            scaling.workers <= cpus and scaling.workers * scaling.cpus_per_worker <= cpus,
            f"scaling.workers={scaling.workers} x {scaling.cpus_per_worker:g} CPU, but the "
            f"cluster has {cpus:g} CPU(s) (set scaling.autoscaling: true if it adds nodes "
            "on demand)",
        )


def check_dataset(data_dir: str | Path) -> dict[str, int]:
    """Validate the train and val splits (before any training); their row counts."""
    from cdiflow.pipelines.data import validate_split

    return {split: validate_split(data_dir, split) for split in ("train", "val")}


def _check_tracking_reach(uri: str) -> None:
    """The embedded SQLite store is a file on this machine: multi-node runs need a server."""
    import ray

    from cdiflow.pipelines.tracking import is_embedded

    hosts = {n["NodeManagerAddress"] for n in ray.nodes() if n.get("Alive")}
    require(
        not is_embedded(uri) or len(hosts) <= 1,
        f"the cluster spans {len(hosts)} machines but MLflow uses the embedded SQLite store "
        f"({uri}), which only this machine can write: set MLFLOW_TRACKING_URI to an mlflow "
        "server",
    )


def _read_split(paths: list[Path | str]):
    from cdiflow.pipelines.data import read_parquet_dataset

    return read_parquet_dataset(paths).select_columns(["modulus", "amplitude", "phase"])


def build_trainer(
    job: TrainJobConfig,
    shards: dict[str, list],
    *,
    train_rows: int,
    tracking_uri: str | None,
    run_id: str | None,
    name: str,
    storage_path: str,
    callbacks: list | None = None,
):
    """The ``TorchTrainer`` of one training run; ``train`` and every Tune trial build it here.

    ``shards`` maps ``"train"`` and ``"val"`` to shard paths or URIs; the train split is
    sharded across workers, the validation split is read whole by rank 0. ``callbacks``
    go to Ray Train's ``RunConfig`` (a trial passes Tune's report callback).
    """
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    use_gpu = job.scaling.use_gpu
    per_worker = {"CPU": job.scaling.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    return TorchTrainer(
        train_worker,
        train_loop_config={
            "job": job.to_dict(),
            "train_rows": train_rows,
            "tracking_uri": tracking_uri,
            "run_id": run_id,
        },
        torch_config=TorchConfig(backend="nccl" if use_gpu else "gloo"),
        scaling_config=ScalingConfig(
            num_workers=job.scaling.workers, use_gpu=use_gpu, resources_per_worker=per_worker
        ),
        run_config=RunConfig(
            name=name,
            storage_path=storage_path,
            failure_config=FailureConfig(max_failures=job.run.max_failures),
            checkpoint_config=CheckpointConfig(num_to_keep=job.run.checkpoints_to_keep),
            callbacks=callbacks,
        ),
        datasets={split: _read_split(shards[split]) for split in ("train", "val")},
        dataset_config=DataConfig(datasets_to_split=["train"]),
    )


def _default_name() -> str:
    return time.strftime("cdiflow-train-%Y%m%d-%H%M%S", time.gmtime())


def _run_record(storage: Path, name: str) -> Path:
    return storage / f"{name}.{RUN_FILE}"


def run_training(
    job: TrainJobConfig,
    data_dir: str | Path,
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
        object-storage URI (``s3://bucket/prefix``) that every node can read.
    workspace : folder for the embedded MLflow store and (by default) Ray's run folders.
    name : run name (Ray's run folder and the MLflow run name). ``resume`` needs it.
    resume : continue the stopped run ``name`` from its latest checkpoint.
    storage_path : where Ray keeps run folders (shared storage on multi-node clusters).
    track : log to MLflow and register; False trains only (benchmarks).
    rows : row counts from ``check_dataset`` when the caller validated already.
    """
    import ray
    import ray.train

    from cdiflow.pipelines.cluster import train_env_defaults
    from cdiflow.pipelines.data import list_shards

    data_dir = Location.parse(data_dir).value
    train_rows = (rows or check_dataset(data_dir))["train"]
    check_resources(job.scaling, ray.cluster_resources())

    workspace = Path(workspace).expanduser().resolve()
    storage = Path(storage_path).expanduser().resolve() if storage_path else workspace / "runs"
    if resume and not name:
        raise InputError("--resume needs --name of the run to continue")
    name = name or _default_name()
    record = _run_record(storage, name)
    exists = (storage / name).exists()
    if resume and not exists:
        raise InputError(f"no run {name!r} under {storage} to resume")
    if not resume and exists:
        raise InputError(
            f"run {name!r} already exists under {storage}; pass --resume or a new --name"
        )
    storage.mkdir(parents=True, exist_ok=True)

    uri = run_id = None
    if track:
        from cdiflow.pipelines.tracking import tracking_uri

        _check_tracking_reach(tracking_uri(workspace))
        uri, run_id = _start_tracking(job, workspace, name, data_dir, record, resume)

    shards = {split: list_shards(data_dir, split) for split in ("train", "val")}
    trainer = build_trainer(
        job,
        shards,
        train_rows=train_rows,
        tracking_uri=uri,
        run_id=run_id,
        name=name,
        storage_path=str(storage),
    )
    train_env_defaults()  # Ray Train passes it from this process to controller and workers
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
            _finish(uri, run_id, "FAILED")
        reason = str(exc).strip().splitlines()
        raise TrainingFailed(
            f"run {name!r} failed ({type(exc).__name__}: {reason[0] if reason else ''}); "
            f"fix the cause and re-run with --resume --name {name}"
        ) from exc
    return _finish_training(job, result, name, storage, uri, run_id, track, data_dir)


def _start_tracking(job, workspace, name, data_dir, record: Path, resume: bool):
    from cdiflow.pipelines.tracking import RunLogger, configure, experiment_id

    uri = configure(workspace)
    if resume and record.is_file():
        run_id = json.loads(record.read_text())["run_id"]
        RunLogger(uri, run_id).client.update_run(run_id, status="RUNNING")
        return uri, run_id
    exp = experiment_id(uri, job.run.experiment, workspace=workspace)
    seeds = {"train": job.train.seed}
    manifest = Location.parse(data_dir) / "manifest.json"
    if manifest.is_file():
        seed = json.loads(manifest.read_text()).get("seed")
        if isinstance(seed, int):
            seeds["data"] = seed
    logger = RunLogger.start(
        uri,
        exp,
        name,
        job.to_dict(),
        seeds,
        tags={"data_dir": str(Location.parse(data_dir).resolve()), "ray_run": name},
    )
    record.parent.mkdir(parents=True, exist_ok=True)
    record.write_text(json.dumps({"run_id": logger.run_id, "tracking_uri": uri}))
    return uri, logger.run_id


def _finish(uri, run_id, status):
    from cdiflow.pipelines.tracking import RunLogger

    RunLogger(uri, run_id).finish(status)


CURVES = ("train_loss", "val_loss", "val_chi2_modulus", "val_chi2_amplitude", "val_chi2_phase")


def _log_training_curves(uri: str, run_id: str) -> None:
    """The run's loss and chi^2 curves as ``figures/training_curves.png``."""
    import matplotlib.pyplot as plt

    from cdiflow.pipelines.tracking import RunLogger
    from cdiflow.reports.evaluation import training_curves

    logger = RunLogger(uri, run_id)
    history = {
        name: [(m.step, m.value) for m in logger.client.get_metric_history(run_id, name)]
        for name in CURVES
    }
    with tempfile.TemporaryDirectory() as folder:
        figure = training_curves(history, Path(folder) / "training_curves.png")
        plt.close(figure)
        logger.log_file(Path(folder) / "training_curves.png", "figures")


def eval_fingerprint(data_dir: str | Path, split: str = "val") -> str:
    """An id of the evaluation set: sha256 over the manifest's rows and sha256 per shard.

    The manifest already holds every shard file's sha256 (``check_dataset`` verified
    them), so this reads no data. Equal fingerprints mean byte-identical shards; the same
    patterns written by another writer version get a new one, which only costs a
    rescore of the champion, never a wrong comparison.
    """
    import hashlib

    from cdiflow.formats.dataset import read_manifest

    digest = hashlib.sha256(f"cdiflow eval set: {split}\n".encode())
    for info in read_manifest(data_dir).shards[split]:
        digest.update(f"{info.rows} {info.sha256}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def champion_rescorer(uri: str, data_dir: str | Path, batch_size: int = 256):
    """``version -> val_chi2`` of a registered version on ``data_dir``'s val split.

    For ``tracking.apply_champion_rule``: scores the champion the way the rank-0 worker
    scored the candidate (BatchNorm statistics recomputed from the val inputs, then
    ``evaluate``'s mean modulus chi^2), in this process, float32, on its GPU if it has
    one (a bf16 worker's score can differ in the last digits). The registered weights
    are not changed.
    """

    def rescore(version: str) -> float:
        import torch

        from cdiflow.pipelines.data import read_split_arrays
        from cdiflow.pipelines.tracking import MODEL_NAME, load_model
        from cdiflow.train.loop import evaluate, recalibrate_batchnorm

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model, _, _ = load_model(f"models:/{MODEL_NAME}/{version}", uri)
        model.to(device)
        arrays = read_split_arrays(data_dir, "val")
        rows = len(arrays["modulus"])
        batches = [
            {k: torch.from_numpy(v[i : i + batch_size]) for k, v in arrays.items()}
            for i in range(0, rows, batch_size)
        ]
        recalibrate_batchnorm(model, batches, device)
        return float(evaluate(model, batches, device)["chi2_modulus"])

    return rescore


def _finish_training(job, result, name, storage, uri, run_id, track, data_dir) -> TrainOutcome:
    checkpoint = result.checkpoint
    if checkpoint is None:
        raise InputError(f"run {name!r} finished without a checkpoint")
    folder = Path(checkpoint.path)
    weights = folder / WEIGHTS_FILE
    metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
    promotion = None
    if track:
        from cdiflow.errors import NonFiniteScore
        from cdiflow.pipelines.tracking import RunLogger, register_weights

        _log_training_curves(uri, run_id)
        if job.run.register:
            try:
                decision = register_weights(
                    uri,
                    run_id,
                    weights,
                    metrics,
                    fingerprint=eval_fingerprint(data_dir),
                    rescore=champion_rescorer(uri, data_dir),
                )
            except NonFiniteScore:  # a diverged run: refused, and the run says so
                _finish(uri, run_id, "FAILED")
                raise
            promotion = decision.to_dict()
            RunLogger(uri, run_id).log_dict(promotion, "champion_decision.json")
        _finish(uri, run_id, "FINISHED")
    return TrainOutcome(
        name=name,
        run_dir=str(storage / name),
        run_id=run_id,
        tracking_uri=uri,
        epochs_done=int(metrics.get("epoch", -1)) + 1,
        metrics=metrics,
        weights=str(weights),
        promotion=promotion,
    )
