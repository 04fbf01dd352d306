"""Gradient-based refinement: Adam on the object through the differentiable forward model.

``gradient_refine`` minimises, per pattern, a data-fidelity loss between |F x| and the
measured modulus over the measured pixels, with x zero outside an upper-bound support
(the object is parametrised only inside it, so every iterate satisfies the support):

- ``"amplitude"``: sum_w (|F x| - m)^2 / sum_w m^2 -- exactly chi^2 of paper eq. 5;
- ``"poisson"``: sum_w (|F x|^2 - m^2 log |F x|^2) / sum_w m^2, the Poisson negative
  log-likelihood of counts m^2 up to a constant (weights weak pixels more).

|F x| is ``FarField.modulus`` (the project's one forward model; torch's complex ``abs``
has a zero gradient at 0, so no pixel makes a NaN). Everything is centred
(``cdiflow.physics.fft``): modulus, start, support and the result. A batch (B, P, P) runs
at once on the tensors' device, any P; the update is Adam written out on tensors so that
each pattern keeps its own state and stops on its own chi^2 plateau, which makes a batch
give each pattern the result it gets alone.

The parameters are the object divided by a per-pattern scale (the RMS amplitude that
carries the measured energy over the support), so that ``lr`` is a fraction of a typical
pixel whatever the pattern's normalisation or size. The start is first scaled by the
least-squares factor against the measured modulus, so the start's chi^2 is its
scale-fitted chi^2, and the best iterate (chi^2 of ``cdiflow.physics.farfield.chi2``, as
the engine records it) is kept: a refinement never ends worse than its own start.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from cdiflow.config import Config, require
from cdiflow.errors import InputError
from cdiflow.phasing.runner import PhasingResult
from cdiflow.physics.farfield import PAPER, FarField
from cdiflow.physics.farfield import chi2 as chi2_of
from cdiflow.reconstruction import Reconstruction

LOSSES = ("amplitude", "poisson")
PARAMETRISATIONS = ("cartesian", "polar")
MOMENTS = ("pattern", "element")
_DIMS2 = (-2, -1)
_EPS = 1e-30


@dataclasses.dataclass(frozen=True)
class GradientConfig(Config):
    """Settings of ``gradient_refine``.

    Attributes
    ----------
    steps : at most this many Adam steps.
    lr : Adam step, as a fraction of the per-pattern RMS pixel amplitude (cartesian) or,
        for the phase of ``polar``, in radians.
    loss : ``"amplitude"`` (chi^2 itself) or ``"poisson"``.
    parametrisation : ``"polar"`` (amplitude and phase, the default) or ``"cartesian"``
        (real and imaginary part).
    moment : Adam's second moment per ``"pattern"`` (the mean squared gradient of the
        pattern, the default) or per ``"element"`` (textbook Adam). Per element, Adam
        moves every parameter by about ``lr`` whatever its gradient, which puts mass on
        the empty pixels of a loose support: on generator particles in the 32 x 32 box
        from a perturbed truth (aligned amplitude error 0.06-0.12), 300 steps ended at
        0.07-0.41 (cartesian) and 0.03-0.09 (polar) per element, 0.01-0.02 (cartesian)
        and 0.003-0.01 (polar, lr <= 0.03) per pattern, all at chi^2 ~1e-4.
    betas, eps : Adam's moment decays and denominator guard.
    patience : a pattern stops when its best chi^2 has not fallen by more than ``rel_tol``
        (relative) for this many steps; 0 never stops early.
    rel_tol : the relative fall of the best chi^2 that counts as progress.
    poisson_floor : intensity floor inside the Poisson log, relative to the mean
        measured intensity (keeps log finite where |F x| = 0).
    """

    steps: int = 200
    lr: float = 0.02
    loss: str = "amplitude"
    parametrisation: str = "polar"
    moment: str = "pattern"
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-12
    patience: int = 20
    rel_tol: float = 1e-3
    poisson_floor: float = 1e-6

    def validate(self) -> None:
        require(self.steps >= 0, f"steps must be >= 0, got {self.steps}")
        require(self.lr > 0, f"lr must be > 0, got {self.lr}")
        require(self.loss in LOSSES, f"loss must be one of {LOSSES}, got {self.loss!r}")
        require(
            self.parametrisation in PARAMETRISATIONS,
            f"parametrisation must be one of {PARAMETRISATIONS}, got {self.parametrisation!r}",
        )
        require(self.moment in MOMENTS, f"moment must be one of {MOMENTS}, got {self.moment!r}")
        require(all(0 <= b < 1 for b in self.betas), f"betas must be in [0, 1), got {self.betas}")
        require(self.eps > 0, "eps must be > 0")
        require(self.patience >= 0, f"patience must be >= 0, got {self.patience}")
        require(self.rel_tol >= 0, f"rel_tol must be >= 0, got {self.rel_tol}")
        require(self.poisson_floor > 0, "poisson_floor must be > 0")


@dataclasses.dataclass(frozen=True, kw_only=True)
class GradientResult(PhasingResult):
    """What ``gradient_refine`` returns: a ``runner.PhasingResult`` plus ``iterations``.

    Its ``support`` is the fixed support (so ``collapsed`` is always False), and ``chi2``
    is (B, T) for the T steps the batch ran: after a pattern stopped its (unchanging)
    chi^2 is repeated. ``iterations`` : (B,) int64, the Adam steps each pattern ran
    before it stopped.
    """

    iterations: torch.Tensor


def data_loss(
    obj: torch.Tensor,
    modulus: torch.Tensor,
    mask: torch.Tensor | None,
    norm: torch.Tensor,
    physics: FarField,
    config: GradientConfig,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pattern loss (B,) of centred (B, P, P) objects, and their |F| (B, P, P).

    ``modulus`` is zero at unmeasured pixels and ``mask`` (True = measured) removes them
    from the sum, so their values never count; ``norm`` is sum_w m^2 per pattern.
    """
    mag = physics.modulus(obj)
    if config.loss == "amplitude":
        diff = mag - modulus
        term = diff * diff
    else:
        intensity = mag * mag
        floor = config.poisson_floor * norm / modulus[0].numel()
        term = intensity - modulus * modulus * torch.log(intensity + floor[:, None, None])
    if mask is not None:
        term = torch.where(mask, term, 0.0)
    return term.sum(_DIMS2) / norm, mag


def _check(modulus, start, support, mask, physics: FarField):
    p = physics.pattern_size
    if modulus.ndim != 3 or tuple(modulus.shape[-2:]) != (p, p):
        raise InputError(f"modulus must be (B, {p}, {p}), got {tuple(modulus.shape)}")
    if tuple(start.shape) != tuple(modulus.shape):
        raise InputError(
            f"start {tuple(start.shape)} does not match modulus {tuple(modulus.shape)}"
        )
    for name, t in (("support", support), ("mask", mask)):
        if t is not None and tuple(t.shape[-2:]) != (p, p):
            raise InputError(f"{name} must be (P, P) or (B, P, P) with P={p}, got {tuple(t.shape)}")
    if not bool(torch.isfinite(modulus if mask is None else torch.where(mask, modulus, 0)).all()):
        raise InputError("modulus has non-finite values at measured pixels")


@dataclasses.dataclass
class _Problem:
    """The loop's fixed inputs: modulus m (0 where unmeasured), mask w, support s, the
    measured energy ``norm`` (B,), the parameter ``scale`` (B, 1, 1) and the geometry."""

    m: torch.Tensor
    w: torch.Tensor | None
    s: torch.Tensor
    norm: torch.Tensor
    scale: torch.Tensor
    physics: FarField
    config: GradientConfig

    def object(self, params: torch.Tensor) -> torch.Tensor:
        """(B, 2, P, P) real parameters -> (B, P, P) complex object, zero off the support."""
        a, b = params[:, 0], params[:, 1]
        if self.config.parametrisation == "polar":
            # not torch.polar: its backward takes abs >= 0 and gets the sign of the
            # amplitude gradient wrong once an amplitude crosses 0 (measured, torch 2.x),
            # which made the iterates run away
            x = torch.complex(a * torch.cos(b), a * torch.sin(b))
        else:
            x = torch.complex(a, b)
        return torch.where(self.s, x * self.scale, 0)

    def params(self, obj: torch.Tensor) -> torch.Tensor:
        """Inverse of ``object`` on the support (the start's parameters)."""
        x = obj / self.scale
        if self.config.parametrisation == "polar":
            return torch.stack([x.abs(), x.angle()], 1)
        return torch.stack([x.real, x.imag], 1)

    def loss(self, obj: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(per-pattern loss, per-pattern chi^2 (detached))."""
        loss, mag = data_loss(obj, self.m, self.w, self.norm, self.physics, self.config)
        return loss, chi2_of(mag.detach(), self.m, self.w, norm=self.norm)


def _prepare(modulus, start, support, mask, physics, config) -> tuple[_Problem, torch.Tensor]:
    real = modulus.dtype if modulus.dtype in (torch.float32, torch.float64) else torch.float32
    cplx = torch.complex64 if real == torch.float32 else torch.complex128
    batch, device = modulus.shape[0], modulus.device
    w = None if mask is None else mask.to(device, torch.bool).expand_as(modulus)
    m = modulus.to(real) if w is None else torch.where(w, modulus.to(real), 0.0)
    s = support.to(device, torch.bool).expand(batch, *modulus.shape[-2:])
    pixels = s.flatten(1).sum(1)
    if bool((pixels == 0).any()):
        raise InputError("a support has no pixel")
    norm = (m * m).sum(_DIMS2).clamp_min(_EPS)
    x0 = torch.where(s, start.to(device, cplx), 0)
    mag0 = physics.modulus(x0)
    mag0 = mag0 if w is None else mag0 * w
    fit = (mag0 * m).sum(_DIMS2) / (mag0 * mag0).sum(_DIMS2).clamp_min(_EPS)
    if bool((fit <= 0).any()):
        raise InputError("a start object is zero on its support (nothing to refine)")
    scale = torch.sqrt(norm / pixels.to(real))[:, None, None]
    problem = _Problem(m, w, s, norm, scale, physics, config)
    return problem, x0 * fit[:, None, None].to(real)


def gradient_refine(
    modulus: torch.Tensor,
    start: torch.Tensor,
    support: torch.Tensor,
    config: GradientConfig | None = None,
    *,
    mask: torch.Tensor | None = None,
    physics: FarField = PAPER,
) -> GradientResult:
    """Refine a batch by Adam on the object inside ``support``.

    Parameters
    ----------
    modulus : (B, P, P) float32/float64, centred measured sqrt(I) (any scale).
    start : (B, P, P) complex, centred start object (its scale is fitted). It is set to
        zero off ``support`` first: after ER/HIO pass the support the kept object
        satisfies (``best_obj != 0``), not a later shrink-wrap support, or the start is
        cut (measured on scan 54: a cut start began worse than the engine's answer).
    support : (P, P) or (B, P, P) bool, centred upper-bound support (kept fixed). A
        loose one lets the object fit noise: on scan 54 a 50-pixel square reached
        chi^2 2e-5 with 5000 unknowns for 4096 measurements; use a tight support.
    config : ``GradientConfig`` (default: its defaults).
    mask : optional (P, P) or (B, P, P) bool, True where a pixel is measured.
    physics : geometry; only ``pattern_size`` must match P here.

    Returns
    -------
    GradientResult on the device of ``modulus``.
    """
    config = config or GradientConfig()
    _check(modulus, start, support, mask, physics)
    problem, x0 = _prepare(modulus, start, support, mask, physics, config)
    params, best_x, best, curve, iterations = _descend(problem, x0, config)
    batch = modulus.shape[0]
    x = problem.object(params)
    with torch.no_grad():
        final = problem.loss(x)[1]
    best_x, best, _ = _keep_best(x, final, best_x, best, 0.0, ties=True)
    chi2 = torch.stack(curve, 1) if curve else final.float()[:, None]
    return GradientResult(
        obj=x,
        best_obj=best_x,
        support=problem.s,
        chi2=chi2,
        final_chi2=final.float(),
        best_chi2=best.float(),
        collapsed=torch.zeros(batch, dtype=torch.bool, device=modulus.device),
        iterations=iterations,
    )


def _descend(problem: _Problem, x0: torch.Tensor, config: GradientConfig):
    """Adam steps from ``x0`` until ``config.steps`` or every pattern stalled.

    Returns (last parameters, best object so far, its chi^2, chi^2 per step as a list,
    steps taken per pattern). A pattern whose chi^2 has not fallen by ``rel_tol`` for
    ``patience`` steps stops (its parameters freeze) while the others go on.
    """
    params = problem.params(x0)
    adam = _Adam.like(params, config)
    batch, device = x0.shape[0], problem.m.device
    active = torch.ones(batch, dtype=torch.bool, device=device)
    stall = torch.zeros(batch, dtype=torch.long, device=device)
    iterations = torch.zeros_like(stall)
    best_x, best = x0, torch.full((batch,), math.inf, device=device)
    curve: list[torch.Tensor] = []
    for _ in range(config.steps):
        params.requires_grad_(True)
        x = problem.object(params)
        loss, err = problem.loss(x)
        (grad,) = torch.autograd.grad(loss.sum(), params)
        params = params.detach()
        curve.append(err.float())
        best_x, best, improved = _keep_best(x.detach(), err, best_x, best, config.rel_tol)
        stall = torch.where(improved, 0, stall + 1)
        if config.patience:
            active &= stall < config.patience
        if not bool(active.any()):
            break
        params = adam.step(params, grad, active)
        iterations += active
    return params, best_x, best, curve, iterations


def _keep_best(x, err, best_x, best, rel_tol: float, ties: bool = False):
    """Per pattern, the better of (x, best_x); ``improved``: err fell by more than rel_tol."""
    better = err <= best if ties else err < best
    improved = err < best * (1 - rel_tol)
    best_x = torch.where(better[:, None, None], x, best_x)
    return best_x, torch.where(better, err, best), improved


@dataclasses.dataclass
class _Adam:
    """Adam (Kingma & Ba 2015) on one (B, ...) tensor; a pattern that is not ``active``
    keeps its parameters and moments, so its state is what it would be run alone."""

    lr: float
    betas: tuple[float, float]
    eps: float
    m1: torch.Tensor
    m2: torch.Tensor
    per_pattern: bool = False
    t: int = 0

    @classmethod
    def like(cls, params: torch.Tensor, config: GradientConfig) -> _Adam:
        zeros = torch.zeros_like(params)
        per = config.moment == "pattern"
        return cls(config.lr, config.betas, config.eps, zeros, zeros.clone(), per)

    def step(self, params: torch.Tensor, grad: torch.Tensor, active: torch.Tensor):
        # patterns stop for good once inactive, so the active ones share one step count
        self.t += 1
        b1, b2 = self.betas
        keep = active.reshape(-1, *([1] * (params.ndim - 1)))
        self.m1 = torch.where(keep, b1 * self.m1 + (1 - b1) * grad, self.m1)
        g2 = grad * grad
        if self.per_pattern:
            g2 = g2.mean(tuple(range(1, grad.ndim)), keepdim=True).expand_as(grad)
        self.m2 = torch.where(keep, b2 * self.m2 + (1 - b2) * g2, self.m2)
        m_hat = self.m1 / (1 - b1**self.t)
        v_hat = self.m2 / (1 - b2**self.t)
        update = self.lr * m_hat / (v_hat.sqrt() + self.eps)
        return torch.where(keep, params - update, params)


class GradientReconstructor:
    """Gradient refinement as a reconstructor: a start, then ``gradient_refine``.

    Parameters
    ----------
    start : ``(modulus (B, P, P), physics) -> Start`` (``cdiflow.phasing.starts``); its
        support is the fixed upper bound.
    config : ``GradientConfig``.
    device : where to run (default: CPU).
    """

    def __init__(self, start, config: GradientConfig | None = None, device=None):
        self.start, self.config = start, config or GradientConfig()
        self.device = torch.device(device or "cpu")

    def reconstruct(self, modulus, mask, physics: FarField) -> Reconstruction:
        """Refine (B, P, P) moduli; the chi^2 curve ends with the kept answer's chi^2."""
        modulus = torch.as_tensor(modulus, dtype=torch.float32)
        start = self.start(modulus, physics)
        mask = None if mask is None else torch.as_tensor(mask, dtype=torch.bool).to(self.device)
        res = gradient_refine(
            modulus.to(self.device),
            start.object.to(self.device),
            start.support.to(self.device),
            self.config,
            mask=mask,
            physics=physics,
        )
        curve = torch.cat([res.chi2, res.best_chi2[:, None]], dim=1).cpu()
        obj, support = physics.crop(res.best_obj).cpu(), physics.crop(res.support).cpu()
        return Reconstruction.from_object(obj, support, curve)
