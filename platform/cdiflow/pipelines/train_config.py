"""The training job's typed config (``configs/train.yaml``) and its sizing checks (no Ray).

``TrainJobConfig`` holds the model and loop configs (owned by ``cdiflow.models`` and
``cdiflow.train``) plus how many Train workers run and what happens to the result.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

from cdiflow.config import Config, require
from cdiflow.errors import ConfigError

STATE_FILE = "state.pt"  # model/optimizer/scheduler state + epoch, tensors only
WEIGHTS_FILE = "model.pt"  # ``save_weights`` file: what gets registered
RUN_FILE = "cdiflow-run.json"  # beside Ray's run folder: the MLflow run id, for --resume
SCORE_METRIC = "val_chi2"  # the champion score: validation modulus chi^2 (eq. 5), mean


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
    # lazy: torch; the Ray driver (pipelines.train) stays torch-free
    from cdiflow.models import ModelConfig

    return ModelConfig


def _train_config_type():
    # lazy: torch; the Ray driver (pipelines.train) stays torch-free
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


def for_data(job: TrainJobConfig, masked: bool) -> TrainJobConfig:
    """``job`` with ``model.mask_channel`` on when the training data carries masks.

    A masked data set (the realistic preset) always trains a model that sees the mask as
    a second input channel, so it can tell an unmeasured pixel from a measured zero; the
    registered weights' config then says so. Unmasked data leave the job as it is.
    """
    if not masked or job.model.mask_channel:
        return job
    return job.replace(model=job.model.replace(mask_channel=True))


def steps_per_epoch(train_rows: int, workers: int, batch_size: int) -> int:
    """Batches per worker and epoch (Ray splits the rows equally across workers)."""
    return max(1, math.ceil((train_rows // workers) / batch_size))


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
