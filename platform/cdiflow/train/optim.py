"""Optimiser and per-batch learning-rate schedule from a ``TrainConfig``."""

from __future__ import annotations

import math

import torch
from torch import nn

from cdiflow.train.config import TrainConfig


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD (paper) or AdamW over all parameters of ``model``."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "adamw":
        return torch.optim.AdamW(
            params, lr=config.lr, betas=config.betas, weight_decay=config.weight_decay
        )
    return torch.optim.SGD(
        params,
        lr=config.lr,
        momentum=config.momentum,
        nesterov=config.nesterov,
        weight_decay=config.weight_decay,
    )


def lr_factor(config: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """Multiplier of ``config.lr`` after ``step`` optimiser steps (the schedule, pure)."""
    epoch = step / steps_per_epoch
    total = config.epochs
    warm = config.warmup_epochs
    final = config.final_lr_fraction
    if config.schedule == "onecycle":
        rise = warm if warm > 0 else 0.3 * total
        start = 1 / 25
        if epoch < rise:
            return start + (1 - start) * (1 - math.cos(math.pi * epoch / rise)) / 2
        t = min(1.0, (epoch - rise) / max(total - rise, 1e-12))
        return final + (1 - final) * (1 + math.cos(math.pi * t)) / 2
    ramp = min(1.0, (step + 1) / (warm * steps_per_epoch)) if warm > 0 else 1.0
    if config.schedule == "step":
        return ramp * config.decay_factor ** math.floor(epoch / config.decay_every)
    if config.schedule == "cosine":
        t = min(1.0, max(0.0, (epoch - warm) / max(total - warm, 1e-12)))
        return ramp * (final + (1 - final) * (1 + math.cos(math.pi * t)) / 2)
    return ramp  # constant


def build_scheduler(
    optimizer: torch.optim.Optimizer, config: TrainConfig, steps_per_epoch: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` stepped once per batch; its state_dict is plain (resumable)."""
    if steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be >= 1, got {steps_per_epoch}")
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda step: lr_factor(config, step, steps_per_epoch)
    )
