"""Gaussian-correlated random phase (paper eq. 3, Garcia & Stoll 1984).

Uncorrelated Gaussian noise z_u is convolved with exp(-2 (x^2/Lx^2 + y^2/Ly^2 +
z^2/Lz^2)), a separable Gaussian of width L/2 per axis. The field is then mapped
linearly so that, over the voxels inside the particle, it spans exactly ``span``
radians centred on zero: span = 2 pi gives the paper's 'strong phase' [-pi, pi].
"""

from __future__ import annotations

import torch

from cdiflow.physics.particles import apply_separable, gaussian_matrix


def correlated_field(
    noise: torch.Tensor, lengths: torch.Tensor, window: tuple[int, int, int] | None = None
) -> torch.Tensor:
    """Smooth white noise into a Gaussian-correlated field.

    Parameters
    ----------
    noise : (B, N, N, N) float, uncorrelated standard normal, indexed (z, y, x).
    lengths : (B, 3) correlation lengths (Lx, Ly, Lz) in voxels.
    window : optional (wz, wy, wx) sizes of a centred window (as ``crop_centre`` cuts
        it); only the field inside it is computed, from all of the noise.

    Returns
    -------
    (B, wz, wy, wx) field (the whole (B, N, N, N) without a window), noise's dtype.
    """
    n = noise.shape[-1]
    wz, wy, wx = window or (n, n, n)
    # One call builds the three axes' kernels: (B, 3) widths -> (B, 3, N, N).
    kernels = gaussian_matrix(n, lengths.flatten() / 2, noise.dtype).view(-1, 3, n, n)
    lx, ly, lz = kernels.unbind(1)
    return apply_separable(noise, _rows(lz, wz), _rows(ly, wy), _rows(lx, wx))


def _rows(matrix: torch.Tensor, size: int) -> torch.Tensor:
    """The ``size`` central rows of (..., n, n) matrices: outputs in a centred window."""
    start = matrix.shape[-1] // 2 - size // 2
    return matrix[..., start : start + size, :]


def scale_to_span(field: torch.Tensor, inside: torch.Tensor, span: float) -> torch.Tensor:
    """Map ``field`` linearly so its range over ``inside`` is [-span/2, span/2].

    Parameters
    ----------
    field : (B, N, N, N) float.
    inside : (B, N, N, N) bool, the particle's voxels (at least one per volume).
    span : total phase range in radians (0 < span <= 2 pi).

    Voxels outside ``inside`` (the blurred edge) follow the same linear map. A volume
    whose field is flat inside (a one-voxel particle) gets phase 0 everywhere.
    """
    big = torch.finfo(field.dtype).max
    lo = torch.where(inside, field, big).flatten(1).amin(1).view(-1, 1, 1, 1)
    hi = torch.where(inside, field, -big).flatten(1).amax(1).view(-1, 1, 1, 1)
    width = hi - lo
    # A one-voxel particle has no range to scale: give it a flat zero phase, rather than
    # dividing by ~0 and sending the blurred edge's phase to +-1e38.
    phase = (field - lo) / width.clamp_min(torch.finfo(field.dtype).tiny) * span - span / 2
    return torch.where(width > 0, phase, 0.0)
