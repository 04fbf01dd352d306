"""Gaussian-correlated random phase (paper eq. 3, Garcia & Stoll 1984).

Uncorrelated Gaussian noise z_u is convolved with exp(-2 (x^2/Lx^2 + y^2/Ly^2 +
z^2/Lz^2)), a separable Gaussian of width L/2 per axis. The field is then mapped
linearly so that, over the voxels inside the particle, it spans exactly ``span``
radians centred on zero: span = 2 pi gives the paper's 'strong phase' [-pi, pi].

The lengths belong to the particle's own axes: the paper rotates the whole complex field
s(r) exp(i phi(r)). The field is therefore made on the particle's axes and read at the
rotated coordinates R^T r of the lab voxels (``sample_field``).
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

    Returns
    -------
    (B, N, N, N) field, noise's dtype.
    """
    n = noise.shape[-1]
    # One call builds the three axes' kernels: (B, 3) widths -> (B, 3, N, N).
    kernels = gaussian_matrix(n, lengths.flatten() / 2, noise.dtype).view(-1, 3, n, n)
    lx, ly, lz = kernels.unbind(1)
    return apply_separable(noise, lz, ly, lx)


def sample_field(field: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
    """Trilinear samples of centred (B, N, N, N) fields at particle-frame coordinates.

    This is how the phase rotates with its particle (the paper rotates the whole complex
    field): the field is made on the particle's own axes, where its correlation lengths
    (Lx, Ly, Lz) live, and read at R^T r. The field is smooth on the voxel scale (L >= 2
    voxels), so trilinear interpolation loses little; outside the box it takes the
    border value.

    Parameters
    ----------
    field : (B, N, N, N) float, indexed (z, y, x) in the particle frame.
    local : (B, 3, Z, Y, X) coordinates (x, y, z) in voxels from the field's centre.

    Returns
    -------
    (B, Z, Y, X) float.
    """
    n = field.shape[-1]
    # align_corners: -1 and +1 are the centres of voxels 0 and N - 1.
    grid = ((local + n // 2) * (2 / (n - 1)) - 1).permute(0, 2, 3, 4, 1)
    sampled = torch.nn.functional.grid_sample(
        field.unsqueeze(1), grid, mode="bilinear", padding_mode="border", align_corners=True
    )
    return sampled[:, 0]


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
