"""Pure phasing projections on torch tensors: ER, HIO and RAAR.

Every update takes the current iterate ``x``, its Fourier projection ``y = P_M(x)``
(``fourier_projection``) and the support, and returns the next iterate. All arrays are
complex ``(..., P, P)`` tensors in one and the same layout (centred, or the unshifted
layout the batched runner uses internally: every update is pixel-wise, so it does not
care); ``support`` is a bool tensor broadcastable to ``x``; ``beta`` a float or a tensor
broadcastable to ``x`` (one value per pattern: shape ``(B, 1, 1)``).

Each update is affine in ``(x, y)`` with coefficients that depend only on the support
and beta: ``x' = a x + c y`` (``COEFFICIENTS``). The functions below are written that
way, and the batched runner uses the very same coefficient functions, precomputed once
per support change, so an iteration costs two real-by-complex multiplies instead of
masked selects.

The Fourier constraint honours a mask of measured pixels: where the mask is False (a
beamstop, a detector gap) the current Fourier value is kept, so those pixels stay free.
"""

from __future__ import annotations

import torch

# The magnitude and the masked modulus projection belong to the physics object; they are
# re-exported here because every projection below is written in terms of them.
from cdiflow.physics.farfield import magnitude
from cdiflow.physics.farfield import project_modulus as fourier_magnitude_projection

__all__ = [
    "COEFFICIENTS",
    "PROJECTIONS",
    "apply",
    "er",
    "fourier_magnitude_projection",
    "hio",
    "magnitude",
    "raar",
]


def er_coefficients(support: torch.Tensor, beta=None, dtype=None):
    """ER: ``a = 0`` (None), ``c = S`` -- y inside the support, 0 outside."""
    return None, support.to(_real_dtype(beta, dtype))


def hio_coefficients(support: torch.Tensor, beta, dtype=None):
    """HIO: ``a = 1 - S``, ``c = S - beta (1 - S)`` -- y inside, ``x - beta y`` outside."""
    # one select per coefficient (same values as the affine formula, fewer passes)
    real, support = _real_dtype(beta, dtype), support.bool()
    return (~support).to(real), _select(support, 1.0, -beta, real)


def raar_coefficients(support: torch.Tensor, beta, dtype=None):
    """RAAR (Luke): ``a = beta (1 - S)``, ``c = S + (1 - 2 beta)(1 - S)``."""
    real, support = _real_dtype(beta, dtype), support.bool()
    return _select(support, 0.0, beta, real), _select(support, 1.0, 1.0 - 2.0 * beta, real)


def _select(support: torch.Tensor, inside: float, outside, dtype) -> torch.Tensor:
    """``inside`` on the support, ``outside`` (a float or a broadcastable tensor) off it."""
    outside = torch.as_tensor(outside, dtype=dtype, device=support.device)
    return torch.where(support, torch.tensor(inside, dtype=dtype, device=support.device), outside)


def _real_dtype(beta, dtype):
    """The real dtype of the coefficients: ``dtype``, else beta's, else the default."""
    if dtype is not None:
        return dtype
    if torch.is_tensor(beta) and beta.is_floating_point():
        return beta.dtype
    return torch.get_default_dtype()


def apply(coefficients, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``a x + c y`` for ``(a, c) = coefficients`` (``a`` None means 0)."""
    a, c = coefficients
    # addcmul fuses one multiply and the add: one pass less over complex memory
    return y * c if a is None else torch.addcmul(y * c, x, a)


def er(x: torch.Tensor, y: torch.Tensor, support: torch.Tensor, beta=None) -> torch.Tensor:
    """Error reduction (Fienup 1982): ``x' = P_S y`` (y inside the support, 0 outside)."""
    return apply(er_coefficients(support, None, x.real.dtype), x, y)


def hio(x: torch.Tensor, y: torch.Tensor, support: torch.Tensor, beta) -> torch.Tensor:
    """Hybrid input-output (Fienup 1982): ``y`` inside the support, ``x - beta y`` outside."""
    return apply(hio_coefficients(support, beta, x.real.dtype), x, y)


def raar(x: torch.Tensor, y: torch.Tensor, support: torch.Tensor, beta) -> torch.Tensor:
    """RAAR in Luke's form (Luke 2005, Inverse Problems 21, 37).

    ``x' = beta/2 (R_S R_M + I) x + (1 - beta) P_M x`` with ``R = 2P - I``, which reduces to
    ``y`` inside the support and ``beta x + (1 - 2 beta) y`` outside.

    Note: cohere-core's ``raar`` computes ``beta (S y + x) + (1 - 2 beta) y``. Outside the
    support that is the same; inside it gives ``(1 - beta) y + beta x`` instead of ``y``,
    i.e. a relaxed step that keeps part of the previous iterate. We keep Luke's operator.
    """
    return apply(raar_coefficients(support, beta, x.real.dtype), x, y)


PROJECTIONS = {"ER": er, "HIO": hio, "RAAR": raar}
"""Algorithm name (as written in a schedule) -> update function."""

COEFFICIENTS = {"ER": er_coefficients, "HIO": hio_coefficients, "RAAR": raar_coefficients}
"""Algorithm name -> ``(support, beta, dtype) -> (a, c)`` with ``x' = a x + c y``."""
