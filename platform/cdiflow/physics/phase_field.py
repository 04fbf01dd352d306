"""Gaussian-correlated random phase (paper eq. 3, Garcia & Stoll 1984).

Uncorrelated Gaussian noise z_u is convolved with exp(-2 (x^2/Lx^2 + y^2/Ly^2 +
z^2/Lz^2)), a separable Gaussian of width L/2 per axis. The field is then mapped
linearly so that, over the voxels inside the particle, it spans exactly ``span``
radians centred on zero: span = 2 pi gives the paper's 'strong phase' [-pi, pi].
"""

from __future__ import annotations

import torch

from cdiflow.physics.particles import apply_separable, gaussian_matrix


def correlated_field(noise: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Smooth white noise into a Gaussian-correlated field.

    Parameters
    ----------
    noise : (B, N, N, N) float, uncorrelated standard normal, indexed (z, y, x).
    lengths : (B, 3) correlation lengths (Lx, Ly, Lz) in voxels.
    """
    n = noise.shape[-1]
    mats = [gaussian_matrix(n, lengths[:, i] / 2, noise.dtype) for i in range(3)]
    mx, my, mz = mats
    return apply_separable(noise, mz, my, mx)


def scale_to_span(field: torch.Tensor, inside: torch.Tensor, span: float) -> torch.Tensor:
    """Map ``field`` linearly so its range over ``inside`` is [-span/2, span/2].

    Parameters
    ----------
    field : (B, N, N, N) float.
    inside : (B, N, N, N) bool, the particle's voxels (at least one per volume).
    span : total phase range in radians (0 < span <= 2 pi).
    """
    big = torch.finfo(field.dtype).max
    lo = torch.where(inside, field, big).flatten(1).amin(1).view(-1, 1, 1, 1)
    hi = torch.where(inside, field, -big).flatten(1).amax(1).view(-1, 1, 1, 1)
    width = (hi - lo).clamp_min(torch.finfo(field.dtype).tiny)
    return (field - lo) / width * span - span / 2
