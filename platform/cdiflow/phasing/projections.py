"""Pure phasing projections on torch tensors: ER, HIO and RAAR.

Every update takes the current iterate ``x``, its Fourier projection ``y = P_M(x)``
(``fourier_projection``) and the support, and returns the next iterate. All arrays are
complex ``(..., P, P)`` tensors in one and the same layout (centred, or the unshifted
layout the batched runner uses internally: every update is pixel-wise, so it does not
care); ``support`` is a bool tensor broadcastable to ``x``; ``beta`` a float or a tensor
broadcastable to ``x`` (one value per pattern: shape ``(B, 1, 1)``).

The Fourier constraint honours a mask of measured pixels: where the mask is False (a
beamstop, a detector gap) the current Fourier value is kept, so those pixels stay free.
"""

from __future__ import annotations

import torch

_EPS = 1e-12


def fourier_magnitude_projection(
    spectrum: torch.Tensor, modulus: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace |F| by the measured modulus, keep the phase; unmeasured pixels stay free.

    Parameters
    ----------
    spectrum : (..., P, P) complex, the transform of the current iterate.
    modulus : (..., P, P) float, measured sqrt(I) in the same layout.
    mask : optional (..., P, P) bool, True where a pixel is measured.

    Returns
    -------
    (projected spectrum, |spectrum|) -- the magnitude is returned so that the caller can
    compute chi^2 without a second pass.
    """
    magnitude = spectrum.abs()
    ratio = modulus / magnitude.clamp_min(_EPS)
    if mask is not None:
        ratio = torch.where(mask, ratio, torch.ones_like(ratio))
    return spectrum * ratio, magnitude


def er(x: torch.Tensor, y: torch.Tensor, support: torch.Tensor, beta=None) -> torch.Tensor:
    """Error reduction (Fienup 1982): ``x' = P_S y`` (y inside the support, 0 outside)."""
    return torch.where(support, y, torch.zeros_like(y))


def hio(x: torch.Tensor, y: torch.Tensor, support: torch.Tensor, beta) -> torch.Tensor:
    """Hybrid input-output (Fienup 1982): ``y`` inside the support, ``x - beta y`` outside."""
    return torch.where(support, y, x - beta * y)


def raar(x: torch.Tensor, y: torch.Tensor, support: torch.Tensor, beta) -> torch.Tensor:
    """RAAR in Luke's form (Luke 2005, Inverse Problems 21, 37).

    ``x' = beta/2 (R_S R_M + I) x + (1 - beta) P_M x`` with ``R = 2P - I``, which reduces to
    ``y`` inside the support and ``beta x + (1 - 2 beta) y`` outside.

    Note: cohere-core's ``raar`` computes ``beta (S y + x) + (1 - 2 beta) y``. Outside the
    support that is the same; inside it gives ``(1 - beta) y + beta x`` instead of ``y``,
    i.e. a relaxed step that keeps part of the previous iterate. We keep Luke's operator.
    """
    return torch.where(support, y, beta * x + (1.0 - 2.0 * beta) * y)


PROJECTIONS = {"ER": er, "HIO": hio, "RAAR": raar}
"""Algorithm name (as written in a schedule) -> update function."""
