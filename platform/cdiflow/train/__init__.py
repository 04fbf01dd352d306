"""cdiflow.train: the training loop in pure PyTorch (no Ray import).

``fit`` runs epochs over any ``epoch -> iterable of batch dicts`` factory with a
per-epoch hook; ``train_one_epoch`` and ``evaluate`` are its parts; checkpoints are
plain state dicts loaded with ``weights_only=True``.
"""

from cdiflow.train.checkpoint import (
    CheckpointError,
    load_checkpoint,
    save_checkpoint,
    training_state,
)
from cdiflow.train.config import TrainConfig
from cdiflow.train.loop import (
    EpochEnd,
    evaluate,
    fit,
    per_pattern_metrics,
    recalibrate_batchnorm,
    train_one_epoch,
)
from cdiflow.train.optim import build_optimizer, build_scheduler, lr_factor

__all__ = [
    "CheckpointError",
    "EpochEnd",
    "TrainConfig",
    "build_optimizer",
    "build_scheduler",
    "evaluate",
    "fit",
    "load_checkpoint",
    "lr_factor",
    "per_pattern_metrics",
    "recalibrate_batchnorm",
    "save_checkpoint",
    "train_one_epoch",
    "training_state",
]
