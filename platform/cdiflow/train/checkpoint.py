"""Training checkpoints: model + optimizer + scheduler + epoch as plain state dicts.

Saved with ``torch.save`` and read with ``torch.load(weights_only=True)``, so resuming
never unpickles code. DDP-wrapped models are unwrapped (keys without ``module.``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cdiflow.errors import InputError
from cdiflow.formats.atomic import atomic_path

CHECKPOINT_FORMAT = "cdiflow-train-checkpoint"


class CheckpointError(InputError):
    """A training checkpoint is missing, unreadable or not a cdiflow checkpoint."""


def training_state(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    next_epoch: int,
) -> dict[str, Any]:
    """Everything needed to continue at ``next_epoch``, as plain containers of tensors."""
    module = getattr(model, "module", model)
    return {
        "format": CHECKPOINT_FORMAT,
        "next_epoch": int(next_epoch),
        "model": module.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else {},
    }


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> Path:
    """Write a ``training_state`` dict atomically (temp file, then rename)."""
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return path


def load_checkpoint(
    source: str | os.PathLike | dict[str, Any],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
) -> int:
    """Restore states in place from a path or dict; returns the epoch to continue at."""
    if isinstance(source, dict):
        state = source
    else:
        path = Path(source)
        if not path.is_file():
            raise CheckpointError(f"checkpoint not found: {path}")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # unpickling errors come in several types
            raise CheckpointError(f"{path}: not a safe cdiflow checkpoint ({exc})") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError("not a cdiflow training checkpoint")
    getattr(model, "module", model).load_state_dict(state["model"])
    if optimizer is not None:
        optimizer.load_state_dict(state["optimizer"])
    if scheduler is not None and state["scheduler"]:
        scheduler.load_state_dict(state["scheduler"])
    return int(state["next_epoch"])
