"""The Ray Train worker around the pure-PyTorch loop, and the ``TorchTrainer`` that runs it.

``train_worker`` runs on every Train worker. It takes its shard of the training set
(``get_dataset_shard``), prepares the model for DDP, runs one epoch of the pure loop,
evaluates on the whole validation split on rank 0, and reports metrics plus a checkpoint
every epoch. ``ray.train.report`` is a collective: every rank calls it, only rank 0
passes the checkpoint. It resumes from ``ray.train.get_checkpoint()``, which is how a
restarted worker group (``FailureConfig``) and ``--resume`` continue. ``build_trainer``
is the one ``TorchTrainer`` set-up of ``train`` and of every Tune trial.

Masked data (a ``mask`` column, the realistic preset) reach the loop as a batch's
``"mask"`` key, and the model gets ``mask_channel`` (``train_config.for_data``). With
``stream`` (``cdiflow train --generate``) each worker builds its own Ray Data stream of
generated patterns every epoch (``train_stream.py``), and the validation set is generated
once; nothing is read from disk.

Ray and torch are imported inside functions, so importing this module is free.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from cdiflow.pipelines.data import MASK_COLUMN, TENSOR_COLUMNS, has_mask, read_parquet_dataset
from cdiflow.pipelines.tracking_store import RunLogger
from cdiflow.pipelines.train_config import (
    SCORE_METRIC,
    STATE_FILE,
    WEIGHTS_FILE,
    TrainJobConfig,
    for_data,
    steps_per_epoch,
)


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


def train_worker(loop_config: dict) -> None:
    """Body of every Ray Train worker (must be importable from the package).

    ``loop_config`` holds ``job`` (``TrainJobConfig.to_dict()``), ``train_rows``,
    ``tracking_uri`` / ``run_id`` (MLflow, used by rank 0 only; None disables logging) and
    ``stream`` (a ``DatasetConfig`` dict to generate the training data on the fly, or None
    to read the ``train`` dataset shard).
    Runs ``cdiflow.train.fit`` on this worker's shard; the per-epoch hook validates on
    rank 0 (the bare module, the whole validation split), checkpoints and reports.
    """
    import ray.train
    import ray.train.torch
    import torch

    # lazy: torch; the Ray driver (pipelines.train) stays torch-free
    from cdiflow.models import build_model, training_layout
    from cdiflow.train.loop import fit

    job = TrainJobConfig.from_dict(loop_config["job"])
    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    if not job.scaling.use_gpu:
        threads = job.scaling.torch_threads or max(1, round(job.scaling.cpus_per_worker))
        torch.set_num_threads(threads)

    model = build_model(job.model, seed=job.train.seed)  # same initial weights on every rank
    model = training_layout(model)  # before DDP wraps it
    resume = _load_state(ray.train.get_checkpoint())
    model = ray.train.torch.prepare_model(model)
    device = ray.train.torch.get_device()
    logger = _rank0_logger(loop_config, rank)
    if loop_config.get("stream"):
        train_batches = _stream_batches(job, loop_config["stream"], rank, world)
    else:
        train_batches = _train_batches(job, ray.train.get_dataset_shard("train"))
    val_batches = _val_batches(ray.train.get_dataset_shard("val"))
    bare = getattr(model, "module", model)
    fit(
        model,
        job.train,
        train_batches,
        steps_per_epoch(loop_config["train_rows"], world, job.train.batch_size),
        device=device,
        resume=resume,
        on_epoch_end=_epoch_reporter(job, rank, bare, device, val_batches, logger),
    )


def _rank0_logger(loop_config: dict, rank: int):
    """The MLflow ``RunLogger`` on rank 0 of a tracked run; None elsewhere."""
    if rank != 0 or not loop_config.get("run_id"):
        return None
    return RunLogger(loop_config["tracking_uri"], loop_config["run_id"])


def _train_batches(job: TrainJobConfig, train_shard):
    """``epoch -> batches`` of this worker's training shard, shuffled reproducibly."""
    import torch

    def train_batches(epoch: int):
        return train_shard.iter_torch_batches(
            batch_size=job.train.batch_size,
            dtypes=torch.float32,
            local_shuffle_buffer_size=4 * job.train.batch_size,
            local_shuffle_seed=job.train.seed * 100_003 + epoch,  # same order on a rerun
        )

    return train_batches


def _stream_batches(job: TrainJobConfig, stream: dict, rank: int, world: int):
    """``epoch -> batches`` of new generated patterns: this rank's part of epoch ``epoch``."""
    import torch

    # lazy: torch; the Ray driver (pipelines.train) stays torch-free
    from cdiflow.formats.layout import DatasetConfig
    from cdiflow.pipelines.train_stream import epoch_positions, generated_split

    config = DatasetConfig.from_dict(stream)

    def train_batches(epoch: int):
        start, stop = epoch_positions(config, epoch, rank, world)
        patterns = generated_split(config, "train", start, stop)
        return patterns.iter_torch_batches(batch_size=job.train.batch_size, dtypes=torch.float32)

    return train_batches


def _val_batches(val_shard):
    """``() -> list of batches`` of the validation split, read on the first call only."""
    import torch

    cached_val: list = []

    def val_batches() -> list:
        # the validation split is small (5%): read it once, not through Ray Data each epoch
        if not cached_val:
            cached_val.extend(val_shard.iter_torch_batches(batch_size=256, dtypes=torch.float32))
        return cached_val

    return val_batches


def _epoch_metrics(end) -> dict[str, Any]:
    """The epoch's training metrics, averaged over every rank (a collective under DDP)."""
    train = {k: v for k, v in end.metrics.items() if k.startswith("train_")}
    count = train.pop("train_patterns", 0.0)
    train.pop("train_patterns_per_s", None)
    train.pop("train_lr", None)
    train, total = _all_reduce_mean(train, count)
    seconds = end.metrics["seconds"]
    return {
        **train,
        "epoch": end.epoch,
        "lr": end.optimizer.param_groups[0]["lr"],
        "train_patterns": total,
        "samples_per_s": total / seconds if seconds > 0 else 0.0,
        "epoch_seconds": seconds,
    }


def _epoch_reporter(job: TrainJobConfig, rank: int, bare, device, val_batches, logger):
    """The loop's ``on_epoch_end``: validate and checkpoint on rank 0, report on every rank."""
    import ray.train

    def on_epoch_end(end) -> None:
        metrics = _epoch_metrics(end)
        with tempfile.TemporaryDirectory() as folder:
            checkpoint = None
            if rank == 0:
                metrics.update(_validate(job, bare, device, val_batches()))
                checkpoint = _checkpoint(Path(folder), end, bare, job)
                if logger is not None:
                    logger.log_epoch(end.epoch, metrics)
            # a collective: every rank reports, rank 0 with the checkpoint
            ray.train.report(
                metrics, checkpoint=checkpoint, checkpoint_dir_name=f"epoch-{end.epoch:05d}"
            )

    return on_epoch_end


def _validate(job: TrainJobConfig, bare, device, batches: list) -> dict[str, float]:
    """Validation metrics (``val_*`` and the champion score) of the bare module."""
    # lazy: torch; the Ray driver (pipelines.train) stays torch-free
    from cdiflow.train.loop import evaluate, recalibrate_batchnorm

    # Short runs leave BN running averages far behind the weights (the eval model then
    # outputs zeros); recompute them from validation *inputs* only. DDP broadcasts rank
    # 0's buffers to the others at the next forward.
    autocast = job.train.bf16 and device.type == "cuda"
    recalibrate_batchnorm(bare, batches, device)
    val = evaluate(bare, batches, device, job.train.loss, autocast)
    metrics = {f"val_{k}": float(v) for k, v in val.items()}
    metrics[SCORE_METRIC] = metrics["val_chi2_modulus"]
    return metrics


def _checkpoint(folder: Path, end, bare, job: TrainJobConfig):
    """A Ray Train checkpoint of the loop state and the weights file, in ``folder``."""
    import ray.train
    import torch

    # lazy: torch; the Ray driver (pipelines.train) stays torch-free
    from cdiflow.models import save_weights

    torch.save(end.state(), folder / STATE_FILE)
    save_weights(folder / WEIGHTS_FILE, bare, job.model)
    return ray.train.Checkpoint.from_directory(folder)


def _read_split(paths: list[Path | str]):
    """The split's training columns (``mask`` too when the shards have one) on Ray Data."""
    columns = [*TENSOR_COLUMNS, *([MASK_COLUMN] if has_mask(paths) else [])]
    return read_parquet_dataset(paths).select_columns(columns)


def _datasets(shards: dict[str, list] | None, stream) -> dict:
    """The trainer's datasets: the shards' splits, or (on the fly) the generated val set."""
    if stream is None:
        return {split: _read_split(shards[split]) for split in ("train", "val")}
    # lazy: torch; the Ray driver (pipelines.train) stays torch-free
    from cdiflow.pipelines.train_stream import generated_split

    return {"val": generated_split(stream, "val", 0, stream.count("val"))}


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
    stream=None,
):
    """The ``TorchTrainer`` of one training run; ``train`` and every Tune trial build it here.

    ``shards`` maps ``"train"`` and ``"val"`` to shard paths or URIs; the train split is
    sharded across workers, the validation split is read whole by rank 0. ``stream`` (a
    ``DatasetConfig``; ``shards`` is then None) generates them instead (``train_stream``).
    The model gets ``mask_channel`` when the data are masked. ``callbacks`` go to Ray
    Train's ``RunConfig`` (a trial passes Tune's report callback).
    """
    from ray.train import CheckpointConfig, DataConfig, FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchConfig, TorchTrainer

    masked = stream.generator.has_mask if stream is not None else has_mask(shards["train"])
    job = for_data(job, masked)
    use_gpu = job.scaling.use_gpu
    per_worker = {"CPU": job.scaling.cpus_per_worker, **({"GPU": 1} if use_gpu else {})}
    return TorchTrainer(
        train_worker,
        train_loop_config={
            "job": job.to_dict(),
            "train_rows": train_rows,
            "tracking_uri": tracking_uri,
            "run_id": run_id,
            "stream": None if stream is None else stream.to_dict(),
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
        datasets=_datasets(shards, stream),
        dataset_config=DataConfig(datasets_to_split=["train"] if stream is None else []),
    )
