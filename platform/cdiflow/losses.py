"""The physics-constrained loss of the paper (eq. 4).

    loss = (l1 L(A) + l2 L(phi) + l3 (1 - Pearson(|F(pred)|, M))) / (l1 + l2 + l3)
    L(x) = ||x_p - x_g|| / ||x_g||   (per pattern, 2-norm over pixels; batch mean)

The reciprocal-space term goes through the same forward model as the generator
(``cdiflow.physics.fft``): the predicted object ``A exp(i (2 pi p - pi))`` (N x N,
centred) is zero-padded to P x P and ``|centred_fft2|`` is compared with the input
modulus M by Pearson correlation, which is invariant to the per-pattern scale of
M (normalised to max 1) and of A. Outside the support the phase target is 0 by
convention, but there the object is ``A exp(i phi)`` with A ~ 0, so a phase predicted
outside the support changes |F| only as much as the predicted amplitude there is not 0.

Twin ambiguity: |F| of an object equals |F| of its twin (complex conjugate, point
inverted), and the generator's global-phase reference holds for both, so no network can
tell them apart from the modulus. A network trained on the plain real-space terms learns
the average of the two, which has an image error of ~0.045 (amplitude) and ~0.064
(phase) on the default generator. ``LossWeights(twin_invariant=True)`` scores each
pattern against whichever of the target and its twin is closer, so the network may
commit to one of them.

All terms are computed in float32 (or float64 if the inputs are), outside autocast: FFTs
and the norms must not run in bf16.
"""

from __future__ import annotations

import dataclasses

import torch

from cdiflow.config import Config, require
from cdiflow.metrics import twin_aware_errors
from cdiflow.physics.farfield import FarField, object_from_targets

_DIMS2 = (-2, -1)
_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class LossWeights(Config):
    """lambda_1 (amplitude), lambda_2 (phase), lambda_3 (physics / Pearson); paper (1, 1, 4).

    ``twin_invariant`` (default off, as in the paper): see the module docstring.
    """

    amplitude: float = 1.0
    phase: float = 1.0
    physics: float = 4.0
    twin_invariant: bool = False  # real-space terms against the closer of target / twin
    phase_wrapped: bool = False  # the phase term on the circle: see ``wrapped_relative_error``

    def validate(self) -> None:
        for name in ("amplitude", "phase", "physics"):
            require(getattr(self, name) >= 0, f"loss weight {name} must be >= 0")
        require(
            self.amplitude + self.phase + self.physics > 0, "at least one loss weight must be > 0"
        )


def relative_error(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """L(x) = ||x_p - x_g|| / ||x_g|| over the last two axes: (..., N, N) -> (...)."""
    num = torch.linalg.vector_norm(predicted - truth, dim=_DIMS2)
    return num / torch.linalg.vector_norm(truth, dim=_DIMS2).clamp_min(_EPS)


def wrapped_relative_error(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """``relative_error`` of phase targets measured on the circle, inside the support.

    Where the target is in the support (p > 0), p_p - p_g counts modulo 1 (a phase
    modulo 2 pi): a prediction just across a wrap line is near, not a whole turn off, and
    its gradient moves it across the line, not the long way round. Outside the support
    the target's 0 is a convention, not a phase, and nothing is counted: whether a pixel
    is in the support is the amplitude's to say (``ModelConfig.phase_gate``).
    """
    diff = predicted - truth
    diff = torch.where(truth > 0, diff - torch.round(diff), 0.0)
    num = torch.linalg.vector_norm(diff, dim=_DIMS2)
    return num / torch.linalg.vector_norm(truth, dim=_DIMS2).clamp_min(_EPS)


def real_space_errors(
    prediction: torch.Tensor,
    amplitude: torch.Tensor,
    phase: torch.Tensor,
    weights: LossWeights,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pattern L(A) and L(phi), (B,) each; against the closer twin if asked."""
    phase_error = wrapped_relative_error if weights.phase_wrapped else relative_error
    if weights.twin_invariant:
        pair = (weights.amplitude, weights.phase)
        return twin_aware_errors(
            relative_error, prediction[:, 0], prediction[:, 1], amplitude, phase, pair,
            phase_error=phase_error,
        )  # fmt: skip
    return relative_error(prediction[:, 0], amplitude), phase_error(prediction[:, 1], phase)


def predicted_object(amplitude: torch.Tensor, phase_target: torch.Tensor) -> torch.Tensor:
    """Complex object A exp(i phi), phi = 2 pi p - pi: (..., N, N) real -> complex."""
    return object_from_targets(amplitude, phase_target)


def predicted_modulus(prediction: torch.Tensor, pattern_size: int) -> torch.Tensor:
    """|F| of a (B, 2, N, N) prediction, padded to P x P: (B, P, P), unnormalised.

    Centred convention of ``cdiflow.physics.fft`` (zero frequency at index P // 2).
    """
    physics = FarField(pattern_size, prediction.shape[-1])
    return physics.modulus_of_targets(prediction[:, 0], prediction[:, 1])


def pearson(x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Pearson correlation over the last two axes: (..., P, P) x 2 -> (...).

    With ``mask`` (..., P, P) bool, True where measured, only measured pixels count.
    """
    if mask is not None:
        w = mask.to(x.dtype)
        count = w.sum(_DIMS2, keepdim=True).clamp_min(1.0)
        xc = (x - (x * w).sum(_DIMS2, keepdim=True) / count) * w
        yc = (y - (y * w).sum(_DIMS2, keepdim=True) / count) * w
    else:
        xc = x - x.mean(_DIMS2, keepdim=True)
        yc = y - y.mean(_DIMS2, keepdim=True)
    cov = (xc * yc).sum(_DIMS2)
    norm = torch.linalg.vector_norm(xc, dim=_DIMS2) * torch.linalg.vector_norm(yc, dim=_DIMS2)
    return cov / norm.clamp_min(_EPS)


def physics_loss(
    prediction: torch.Tensor,
    modulus: torch.Tensor,
    amplitude: torch.Tensor,
    phase: torch.Tensor,
    weights: LossWeights | None = None,
    mask: torch.Tensor | None = None,
) -> dict[str, torch.Tensor]:
    """Eq. 4 on a batch.

    Parameters
    ----------
    prediction : (B, 2, N, N) float, amplitude and phase target as the CNN outputs them.
    modulus : (B, P, P) float input modulus (centred, any per-pattern scale).
    amplitude, phase : (B, N, N) float ground truth (amplitude max 1; phase target
        p = (phi + pi) / (2 pi) in the support, 0 outside).
    weights : lambdas; default (1, 1, 4).
    mask : optional (B, P, P) bool, True where measured: the physics term ignores the
        unmeasured pixels (a beamstop, detector gaps).

    Returns
    -------
    dict of scalar tensors: ``loss`` (the weighted mean, differentiable) and its batch-mean
    terms ``amplitude``, ``phase`` (L(x)) and ``physics`` (1 - Pearson).
    """
    w = weights or LossWeights()
    device_type = prediction.device.type
    with torch.autocast(device_type=device_type, enabled=False):
        dtype = torch.float64 if prediction.dtype == torch.float64 else torch.float32
        pred = prediction.to(dtype)
        amp_err, phase_err = real_space_errors(pred, amplitude.to(dtype), phase.to(dtype), w)
        amp_term, phase_term = amp_err.mean(), phase_err.mean()
        fourier = predicted_modulus(pred, modulus.shape[-1])
        physics_term = (1 - pearson(fourier, modulus.to(dtype), mask)).mean()
        total = (w.amplitude * amp_term + w.phase * phase_term + w.physics * physics_term) / (
            w.amplitude + w.phase + w.physics
        )
    return {"loss": total, "amplitude": amp_term, "phase": phase_term, "physics": physics_term}
