"""Error metrics: chi^2 (paper eq. 5), real-space errors, and ambiguity-aware versions.

Phase retrieval recovers an object only up to a global phase, an integer shift and the
twin (complex conjugate + point inversion); none of them changes |F|. The
``aligned_*`` functions remove all three before comparing, so a correct reconstruction
scores as correct.

All functions take torch tensors with arbitrary leading batch dimensions and return
one value per pattern. Arrays are centred (see ``cdiflow.physics.fft``). chi^2 and the
twin live with the physics object (``cdiflow.physics.farfield``) and are re-exported
here, where evaluation code looks for them.
"""

from __future__ import annotations

import torch

from cdiflow.physics.farfield import chi2, twin, twin_targets
from cdiflow.physics.fft import centred_fft2, centred_ifft2, pad_centre

__all__ = [
    "align",
    "aligned_errors",
    "chi2",
    "image_error",
    "twin",
    "twin_aware_errors",
]

_DIMS2 = (-2, -1)
_EPS = 1e-30


def image_error(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Normalised real-space error sum (x_p - x_g)^2 / sum x_g^2 (the paper's Fig. 3).

    Applied to amplitude images and to phase targets in (0, 1).
    """
    return ((predicted - truth) ** 2).sum(_DIMS2) / (truth * truth).sum(_DIMS2).clamp_min(_EPS)


def twin_aware_errors(
    error,
    predicted_amplitude: torch.Tensor,
    predicted_phase: torch.Tensor,
    amplitude: torch.Tensor,
    phase_target: torch.Tensor,
    weights: tuple[float, float] = (1.0, 1.0),
    phase_error=None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pattern (amplitude, phase) errors against the closer of the target and its twin.

    The one place where a target or its twin is chosen: |F| cannot tell them apart, so a
    prediction is scored against whichever of the two its weighted error
    ``weights[0] * amplitude + weights[1] * phase`` is lower for. ``error(pred, truth)``
    maps (..., N, N) pairs to (...) (``image_error``, ``losses.relative_error``);
    ``phase_error`` (default ``error``) scores the phase.
    """
    phase_error = phase_error or error
    twin_amp, twin_phase = twin_targets(amplitude, phase_target)
    amp, ph = error(predicted_amplitude, amplitude), phase_error(predicted_phase, phase_target)
    amp_t, ph_t = error(predicted_amplitude, twin_amp), phase_error(predicted_phase, twin_phase)
    use_twin = weights[0] * amp_t + weights[1] * ph_t < weights[0] * amp + weights[1] * ph
    return torch.where(use_twin, amp_t, amp), torch.where(use_twin, ph_t, ph)


def _best_shift(reference: torch.Tensor, candidate: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Integer shift maximising |cross-correlation| (zero-padded, so no wrap-around)."""
    n = reference.shape[-1]
    size = 2 * n
    fr = centred_fft2(pad_centre(reference, size))
    fc = centred_fft2(pad_centre(candidate, size))
    xc = centred_ifft2(fr * fc.conj()).abs()
    flat = xc.flatten(-2).argmax(-1)
    dy = flat // size - size // 2
    dx = flat % size - size // 2
    return dy, dx, xc.flatten(-2).amax(-1)


def align(predicted: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Remove the twin, integer-shift and global-phase ambiguities of ``predicted``.

    Parameters
    ----------
    predicted, truth : (..., N, N) complex tensors, centred.

    Returns
    -------
    The member of {shift(x), shift(twin(x))} x global phase closest to ``truth``.
    """
    batch_shape = predicted.shape[:-2]
    n = predicted.shape[-1]
    p = predicted.reshape(-1, n, n)
    t = truth.reshape(-1, n, n).to(p.dtype)
    out = torch.empty_like(p)
    for i in range(p.shape[0]):
        best = None
        for cand in (p[i], twin(p[i])):
            dy, dx, score = _best_shift(t[i], cand)
            if best is None or score > best[0]:
                best = (score, torch.roll(cand, shifts=(int(dy), int(dx)), dims=(0, 1)))
        moved = best[1]
        overlap = (t[i] * moved.conj()).sum()
        phase = overlap / overlap.abs().clamp_min(_EPS)
        out[i] = moved * phase
    return out.reshape(*batch_shape, n, n)


def aligned_errors(predicted: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
    """Amplitude and phase errors after ``align``.

    The phase error is taken inside the true support (amplitude > 10% of its max) on the
    wrapped difference, so a 2 pi jump costs nothing.
    """
    a = align(predicted, truth)
    amp_err = image_error(a.abs(), truth.abs())
    support = truth.abs() > 0.1 * truth.abs().amax(_DIMS2, keepdim=True)
    dphi = torch.angle(a * truth.conj())
    w = support.to(dphi.dtype)
    phase_err = ((dphi**2) * w).sum(_DIMS2) / w.sum(_DIMS2).clamp_min(1.0)
    return {"amplitude": amp_err, "phase_rms": phase_err.sqrt()}
