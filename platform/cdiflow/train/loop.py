"""The pure-PyTorch training loop: one epoch, evaluation, and ``fit`` over epochs.

Batches are dicts of float tensors: ``modulus`` (B, P, P), ``amplitude`` and ``phase``
(B, N, N) (targets as ``cdiflow.physics.generator`` makes them). Any iterable of such
dicts works: a list, a generator, a Ray Data shard's ``iter_torch_batches``. No Ray here:
the Ray Train glue calls ``fit`` with an ``on_epoch_end`` hook that reports and
checkpoints.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from cdiflow.errors import NonFiniteLoss
from cdiflow.losses import LossWeights, physics_loss, predicted_modulus
from cdiflow.metrics import chi2, image_error, twin_aware_errors
from cdiflow.train.checkpoint import load_checkpoint, training_state
from cdiflow.train.config import TrainConfig
from cdiflow.train.optim import build_optimizer, build_scheduler

Batch = dict[str, torch.Tensor]
LOSS_KEYS = ("loss", "amplitude", "phase", "physics")
LOSS_NAMES = ("loss", "loss_amplitude", "loss_phase", "loss_physics")  # as reported
CHI2_KEYS = (
    "chi2_modulus",
    "chi2_amplitude",
    "chi2_phase",
    "chi2_amplitude_twin_aware",
    "chi2_phase_twin_aware",
)


def _to(batch: Batch, device: torch.device) -> Batch:
    out = {
        k: batch[k].to(device, torch.float32, non_blocking=True)
        for k in ("modulus", "amplitude", "phase")
    }
    if "mask" in batch:  # masked data: the physics term and chi^2 skip unmeasured pixels
        out["mask"] = batch["mask"].to(device, torch.bool, non_blocking=True)
    return out


def _predict(model: nn.Module, b: Batch) -> torch.Tensor:
    """The model's (B, 2, N, N) output; a model with a mask channel also sees the mask.

    Unmasked batches call ``model(modulus)`` alone, so any modulus -> output module works.
    """
    mask = b.get("mask")
    return model(b["modulus"]) if mask is None else model(b["modulus"], mask)


def _loss(prediction: torch.Tensor, b: Batch, weights: LossWeights) -> dict[str, torch.Tensor]:
    return physics_loss(
        prediction, b["modulus"], b["amplitude"], b["phase"], weights, mask=b.get("mask")
    )


def train_one_epoch(
    model: nn.Module,
    batches: Iterable[Batch],
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    loss_weights: LossWeights,
    device: torch.device | str,
    autocast: bool = False,
    grad_clip: float = 0.0,
    check_every: int = 32,
) -> dict[str, float]:
    """One pass over ``batches``; the scheduler is stepped per batch.

    ``autocast`` turns on bf16 autocast for the model (the loss runs in float32).
    Returns pattern-weighted means ``loss``, ``loss_amplitude``, ``loss_phase``,
    ``loss_physics``, plus ``lr`` (after the last step), ``patterns`` and
    ``patterns_per_s``. Sums stay on the device until the end (no per-step sync).

    Raises ``NonFiniteLoss`` (naming the first bad step, 0-based within the epoch) when
    the loss turns NaN or infinite: at most ``check_every`` steps later, and always
    before returning, so a diverged epoch never reaches the caller's checkpoint hook.
    """
    device = torch.device(device)
    model.train()
    sums = torch.zeros(len(LOSS_KEYS), device=device, dtype=torch.float64)
    watch = _NonFiniteWatch(device)
    count = 0
    start = time.perf_counter()
    for step, batch in enumerate(batches):
        b = _to(batch, device)
        terms = _train_step(model, b, optimizer, scheduler, loss_weights, autocast, grad_clip)
        n = b["modulus"].shape[0]
        watch.record(step, terms["loss"].detach().float())
        sums += torch.stack([terms[k].detach().double() for k in LOSS_KEYS]) * n
        count += n
        if (step + 1) % max(1, check_every) == 0:
            watch.raise_if_non_finite()
    if count == 0:
        raise ValueError("train_one_epoch got no batches")
    watch.raise_if_non_finite()
    means = (sums / count).tolist()
    seconds = time.perf_counter() - start
    out = dict(zip(LOSS_NAMES, means, strict=True))
    out.update(
        lr=optimizer.param_groups[0]["lr"],
        patterns=float(count),
        patterns_per_s=count / max(seconds, 1e-9),
    )
    return out


class _NonFiniteWatch:
    """Non-finite loss detection without a host sync per step.

    The index of the first bad step (-1: none yet) and its loss stay on the device and
    are read every ``check_every`` steps and at the end (one host sync each). A per-step
    ``loss.item()`` would cost nothing on CPU, but on a GPU it stalls the host until the
    step has run, so the next step's kernels are no longer queued ahead; the deferred
    read costs three tiny device ops per step. Weights that a bad step corrupted in
    between are never checkpointed: ``train_one_epoch`` raises before it returns.
    """

    def __init__(self, device: torch.device):
        self.first_bad = torch.full((), -1, device=device, dtype=torch.int64)
        self.bad_loss = torch.zeros((), device=device, dtype=torch.float32)  # at first_bad

    def record(self, step: int, loss: torch.Tensor) -> None:
        """Remember ``step`` and ``loss`` if the loss is the epoch's first non-finite one."""
        bad_here = (self.first_bad < 0) & ~torch.isfinite(loss)
        self.first_bad = torch.where(bad_here, step, self.first_bad)
        self.bad_loss = torch.where(bad_here, loss, self.bad_loss)

    def raise_if_non_finite(self) -> None:
        """Read the device flags (one host sync); ``NonFiniteLoss`` naming the bad step."""
        bad_step = int(self.first_bad.item())
        if bad_step >= 0:
            raise NonFiniteLoss(bad_step, float(self.bad_loss.item()))


def _train_step(
    model: nn.Module,
    b: Batch,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None,
    loss_weights: LossWeights,
    autocast: bool,
    grad_clip: float,
) -> dict[str, torch.Tensor]:
    """One optimiser step on a batch already on the device; returns the loss terms.

    Only the model runs under bf16 autocast: the loss is computed in float32.
    """
    with torch.autocast(b["modulus"].device.type, dtype=torch.bfloat16, enabled=autocast):
        prediction = _predict(model, b)
    terms = _loss(prediction, b, loss_weights)
    optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    if grad_clip > 0:
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return terms


@torch.no_grad()
def per_pattern_metrics(
    model: nn.Module,
    batches: Iterable[Batch],
    device: torch.device | str,
    autocast: bool = False,
) -> dict[str, torch.Tensor]:
    """Per-pattern chi^2 (CPU float tensors of length n_patterns), for histograms.

    ``chi2_modulus``: eq. 5 between |F(predicted object)| and the input modulus, after
    fitting the scale (the two are normalised independently). ``chi2_amplitude`` and
    ``chi2_phase``: ``image_error`` of the amplitude and the phase target (0..1) (the
    paper's three numbers); ``*_twin_aware``: the same against the closer of the target
    and its twin.
    """
    device = torch.device(device)
    model.eval()
    out: dict[str, list[torch.Tensor]] = {k: [] for k in CHI2_KEYS}
    for batch in batches:
        b = _to(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            prediction = _predict(model, b)
        for k, v in _pattern_chi2(prediction, b).items():
            out[k].append(v.cpu())
    return {k: torch.cat(v) for k, v in out.items()}


def _pattern_chi2(prediction: torch.Tensor, b: Batch) -> dict[str, torch.Tensor]:
    prediction = prediction.float()
    fourier = predicted_modulus(prediction, b["modulus"].shape[-1])
    amp = image_error(prediction[:, 0], b["amplitude"])
    phase = image_error(prediction[:, 1], b["phase"])
    amp_twin, phase_twin = twin_aware_errors(
        image_error, prediction[:, 0], prediction[:, 1], b["amplitude"], b["phase"]
    )
    return {
        "chi2_modulus": chi2(fourier, b["modulus"], b.get("mask"), fit_scale=True),
        "chi2_amplitude": amp,
        "chi2_phase": phase,
        # The same against whichever of target / twin is closer (|F| cannot tell them
        # apart): the fair real-space score of a prediction.
        "chi2_amplitude_twin_aware": amp_twin,
        "chi2_phase_twin_aware": phase_twin,
    }


@torch.no_grad()
def evaluate(
    model: nn.Module,
    batches: Iterable[Batch],
    device: torch.device | str,
    loss_weights: LossWeights | None = None,
    autocast: bool = False,
) -> dict[str, float]:
    """Mean loss terms and chi^2 (modulus, amplitude, phase) over ``batches``.

    Keys: ``loss``, ``loss_amplitude``, ``loss_phase``, ``loss_physics``,
    ``chi2_modulus``, ``chi2_amplitude``, ``chi2_phase``, ``chi2_amplitude_twin_aware``,
    ``chi2_phase_twin_aware``, ``patterns``.
    """
    device = torch.device(device)
    model.eval()
    weights = loss_weights or LossWeights()
    sums = dict.fromkeys(LOSS_NAMES + CHI2_KEYS, 0.0)
    count = 0
    for batch in batches:
        b = _to(batch, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
            prediction = _predict(model, b)
        terms = _loss(prediction, b, weights)
        chis = _pattern_chi2(prediction, b)
        n = b["modulus"].shape[0]
        for k, name in zip(LOSS_KEYS, LOSS_NAMES, strict=True):
            sums[name] += terms[k].item() * n
        for k, v in chis.items():
            sums[k] += v.double().sum().item()
        count += n
    if count == 0:
        raise ValueError("evaluate got no batches")
    result = {k: v / count for k, v in sums.items()}
    result["patterns"] = float(count)
    return result


@torch.no_grad()
def recalibrate_batchnorm(
    model: nn.Module, batches: Iterable[Batch], device: torch.device | str
) -> None:
    """Recompute every BN's running statistics as a plain average over ``batches``.

    Early in training, or with a high learning rate, the exponential running averages
    lag far behind the weights, and the eval-mode model can output all zeros (seen on
    short CPU runs). A few training batches through the model in train mode, with a
    cumulative average, fix that before evaluation or saving. Weights are not changed.
    """
    device = torch.device(device)
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    if not norms:
        return
    momenta = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average
    was_training = model.training
    model.train()
    try:
        for batch in batches:
            _predict(model, _to(batch, device))
    finally:
        for m, momentum in zip(norms, momenta, strict=True):
            m.momentum = momentum
        model.train(was_training)


@dataclasses.dataclass
class EpochEnd:
    """What ``fit`` hands to ``on_epoch_end`` after each epoch (epoch counts from 0)."""

    epoch: int
    metrics: dict[str, float]
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler

    def state(self) -> dict[str, Any]:
        """A weights_only-safe checkpoint dict to resume *after* this epoch."""
        return training_state(self.model, self.optimizer, self.scheduler, self.epoch + 1)


def fit(
    model: nn.Module,
    config: TrainConfig,
    train_batches: Callable[[int], Iterable[Batch]],
    steps_per_epoch: int,
    *,
    val_batches: Callable[[], Iterable[Batch]] | None = None,
    device: torch.device | str = "cpu",
    resume: str | dict | None = None,
    on_epoch_end: Callable[[EpochEnd], bool | None] | None = None,
) -> list[dict[str, float]]:
    """Train ``model`` for ``config.epochs`` epochs (or until the hook returns True).

    Parameters
    ----------
    train_batches : ``epoch -> iterable of batches``; it owns shuffling (seed it with the
        epoch so a resumed run sees the same data order).
    steps_per_epoch : batches per epoch, for the per-batch LR schedule.
    val_batches : ``() -> iterable of batches``; evaluated after each epoch (``val_*``).
    resume : a checkpoint path or dict from ``EpochEnd.state()`` / ``save_checkpoint``;
        training continues at the epoch after it, bit-identical on CPU.
    on_epoch_end : called with an ``EpochEnd``; return True to stop.

    Returns the per-epoch metrics (``epoch``, ``train_*``, ``val_*``, ``seconds``).
    """
    device = torch.device(device)
    model.to(device)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, steps_per_epoch)
    start_epoch = 0
    if resume is not None:
        start_epoch = load_checkpoint(resume, model, optimizer, scheduler)
    autocast = config.bf16 and device.type == "cuda"
    history = []
    for epoch in range(start_epoch, config.epochs):
        t0 = time.perf_counter()
        train = train_one_epoch(
            model, train_batches(epoch), optimizer, scheduler, config.loss, device, autocast,
            config.grad_clip,
        )  # fmt: skip
        metrics = {"epoch": float(epoch)} | {f"train_{k}": v for k, v in train.items()}
        if val_batches is not None:
            val = evaluate(model, val_batches(), device, config.loss, autocast)
            metrics |= {f"val_{k}": v for k, v in val.items()}
        metrics["seconds"] = time.perf_counter() - t0
        history.append(metrics)
        if on_epoch_end is not None and on_epoch_end(
            EpochEnd(epoch, metrics, model, optimizer, scheduler)
        ):
            break
    return history
