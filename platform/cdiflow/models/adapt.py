"""Adaptation of the CNN to measured patterns (the authors' npj 2021 "transfer learning").

``adapt(model, modulus)`` fine-tunes a deep copy of the network on the measured
pattern(s) with the physics term alone: the objective is the mean over patterns of chi^2
(paper eq. 5, ``cdiflow.physics.farfield.chi2`` with the least-squares scale fitted,
over the measured pixels) between the modulus of the object the CNN predicts
(``FarField.modulus_of_targets``, the same map from output to object that
``CNNReconstructor`` scores) and the measured one. No ground truth is used. It is the
quantity a beamtime row records as ``cnn_chi2``, so "after" is directly comparable.

One pattern adapts a model to one scan; a batch adapts it once for a beamtime (every
step takes the gradient of the mean over all patterns, in chunks of ``batch_size``).

BatchNorm: the copy trains in eval mode, so every BN normalises with the running
statistics of the training data (frozen) and its affine weights train as plain
per-channel scales and shifts. Batch statistics of one 64 x 64 pattern would be a
different network from the one evaluated (and are degenerate at the 8 x 8 bottleneck);
in eval mode the objective optimised is exactly the one reported, for any batch size.

The step of least objective is kept (step 0 is the input model), so the returned model
is never worse than the input on this objective. ``AdaptInfo`` reports before / after.
"""

from __future__ import annotations

import copy
import dataclasses
import time

import torch
from torch import nn

from cdiflow.config import Config, require
from cdiflow.errors import InputError
from cdiflow.physics.farfield import PAPER, FarField


@dataclasses.dataclass(frozen=True)
class AdaptConfig(Config):
    """Settings of ``adapt``.

    Attributes
    ----------
    steps : at most this many optimiser steps (each one gradient of the full objective).
    lr : Adam learning rate.
    weight_decay : decoupled weight decay (AdamW); 0 keeps plain Adam.
    patience : stop when the best objective has not fallen by more than ``rel_tol``
        (relative) for this many steps; 0 runs all ``steps``.
    rel_tol : the relative fall that counts as progress.
    batch_size : patterns per forward pass (memory bound; the gradient is the full mean).
    device : where to train (None: where the model's parameters are).
    """

    steps: int = 100
    lr: float = 1e-3
    weight_decay: float = 0.0
    patience: int = 0
    rel_tol: float = 1e-3
    batch_size: int = 64
    device: str | None = None

    def validate(self) -> None:
        require(self.steps >= 0, f"steps must be >= 0, got {self.steps}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        require(self.patience >= 0, f"patience must be >= 0, got {self.patience}")
        require(self.rel_tol >= 0, f"rel_tol must be >= 0, got {self.rel_tol}")
        require(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")


@dataclasses.dataclass(frozen=True)
class AdaptInfo:
    """What ``adapt`` measured.

    Attributes
    ----------
    chi2_before, chi2_after : (B,) float32 CPU: each pattern's scale-fitted chi^2 with
        the input model and with the returned one.
    objective : (steps_run + 1,) float32 CPU: the mean chi^2 of the weights entering
        each step, and of the last weights.
    steps : optimiser steps run (<= ``AdaptConfig.steps``).
    best_step : how many steps the returned weights had taken (0: the input model).
    seconds : wall time of the adaptation.
    """

    chi2_before: torch.Tensor
    chi2_after: torch.Tensor
    objective: torch.Tensor
    steps: int
    best_step: int
    seconds: float

    @property
    def before(self) -> float:
        """Mean chi^2 over the patterns, input model."""
        return float(self.chi2_before.mean())

    @property
    def after(self) -> float:
        """Mean chi^2 over the patterns, returned model."""
        return float(self.chi2_after.mean())


def physics_chi2(
    model: nn.Module, modulus: torch.Tensor, mask: torch.Tensor | None, physics: FarField
) -> torch.Tensor:
    """(B,) scale-fitted chi^2 of the CNN's predicted object against ``modulus``.

    ``modulus`` (B, P, P) centred, ``mask`` None or (B, P, P) bool (True = measured).
    Differentiable when grad is enabled. The mask reaches the model as it does in
    ``CNNReconstructor.predict`` (a model with a mask channel uses it, others ignore it).
    """
    out = model(modulus, mask).float()
    predicted = physics.modulus_of_targets(out[:, 0], out[:, 1])
    return physics.chi2(predicted, modulus, mask, fit_scale=True)


def _inputs(modulus, mask, physics: FarField, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    m = torch.as_tensor(modulus, dtype=torch.float32)
    m = m[None] if m.ndim == 2 else m
    p = physics.pattern_size
    if m.ndim != 3 or tuple(m.shape[-2:]) != (p, p) or m.shape[0] == 0:
        raise InputError(f"adapt takes (B, {p}, {p}) or ({p}, {p}) moduli, got {tuple(m.shape)}")
    if not bool(torch.isfinite(m).all()) or bool((m < 0).any()):
        raise InputError("moduli must be finite and >= 0")
    if mask is None:
        return m.to(device), None
    w = torch.as_tensor(mask, dtype=torch.bool)
    if tuple(w.shape[-2:]) != (p, p):
        raise InputError(f"mask must be ({p}, {p}) or (B, {p}, {p}), got {tuple(w.shape)}")
    return m.to(device), w.expand_as(m).to(device)


def _chunks(modulus, mask, size: int):
    for i in range(0, modulus.shape[0], size):
        yield modulus[i : i + size], None if mask is None else mask[i : i + size]


def _evaluate(model, modulus, mask, physics, size: int, grad: bool) -> torch.Tensor:
    """(B,) chi^2 of every pattern; with ``grad``, also backpropagate their mean."""
    values = []
    for m, w in _chunks(modulus, mask, size):
        with torch.set_grad_enabled(grad):
            chi2 = physics_chi2(model, m, w, physics)
            if grad:
                (chi2.sum() / modulus.shape[0]).backward()
        values.append(chi2.detach())
    return torch.cat(values)


def adapt(
    model: nn.Module,
    modulus,
    mask=None,
    physics: FarField = PAPER,
    config: AdaptConfig | None = None,
) -> tuple[nn.Module, AdaptInfo]:
    """Fine-tune a copy of ``model`` on measured moduli with the physics term only.

    Parameters
    ----------
    model : the CNN (``model(moduli (B, P, P), mask or None) -> (B, 2, N, N)`` amplitude
        and phase target, as ``PhaseRetrievalCNN``); it is not modified (its weights,
        mode and device stay as they are).
    modulus : (P, P) or (B, P, P) centred moduli (max-normalised as the job stores them).
    mask : optional (P, P) or (B, P, P) bool, True where a pixel is measured.
    physics : the geometry (P and the object box N of the CNN's output).
    config : ``AdaptConfig``.

    Returns
    -------
    (adapted copy in eval mode on the training device, ``AdaptInfo``).
    """
    config = config or AdaptConfig()
    t0 = time.perf_counter()
    source = getattr(model, "module", model)  # unwrap DDP
    device = torch.device(config.device) if config.device else _device_of(source)
    net = copy.deepcopy(source).to(device).eval()  # eval: BN uses its running statistics
    m, w = _inputs(modulus, mask, physics, device)
    for p in net.parameters():
        p.requires_grad_(True)
    before, best, best_step, curve = _fit(net, m, w, physics, config)
    for p in net.parameters():
        p.requires_grad_(False)
    info = AdaptInfo(
        chi2_before=before.float().cpu(),
        chi2_after=best.float().cpu(),
        objective=torch.tensor(curve, dtype=torch.float32),
        steps=len(curve) - 1,
        best_step=best_step,
        seconds=time.perf_counter() - t0,
    )
    return net.eval(), info


def _fit(net, m, w, physics, config: AdaptConfig):
    """The loop: Adam steps on the mean chi^2, keeping (and finally loading) the best."""
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    best_state, best_step, curve = _state(net), 0, []
    before = best = None
    stall = 0
    for step in range(config.steps + 1):
        opt.zero_grad(set_to_none=True)
        last = step == config.steps
        chi2 = _evaluate(net, m, w, physics, config.batch_size, grad=not last)
        value = float(chi2.mean())
        curve.append(value)
        if best is None:
            before = best = chi2
        elif value < float(best.mean()):
            progress = value < float(best.mean()) * (1 - config.rel_tol)
            best, best_state, best_step = chi2, _state(net), step
            stall = 0 if progress else stall + 1
        else:
            stall += 1
        if last or (config.patience and stall >= config.patience):
            break
        opt.step()
    net.load_state_dict(best_state)
    return before, best, best_step, curve


def _device_of(model: nn.Module) -> torch.device:
    first = next(model.parameters(), None)
    return first.device if first is not None else torch.device("cpu")


def _state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}
