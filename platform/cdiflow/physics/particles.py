"""Particle shapes: superellipsoids (paper eq. 2) at uniformly random 3D orientations.

Volumes are indexed (z, y, x) with the beam along z; the origin sits at index N // 2 of
each axis (centred convention, ``cdiflow.physics.fft``). The shape is evaluated at
rotated coordinates, never by interpolating a rotated voxel grid, so it stays sharp
before the deliberate Gaussian edge smoothing.
"""

from __future__ import annotations

import numpy as np
import torch


def random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix drawn uniformly on SO(3) (normalised Gaussian quaternion).

    Returns
    -------
    (3, 3) float64 array R with R @ R.T == I and det(R) == 1.
    """
    q = rng.standard_normal(4)
    return quaternion_to_matrix(q / np.linalg.norm(q))


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) -> (3, 3) rotation matrix."""
    w, x, y, z = q
    return np.array(
        [
            [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
            [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
            [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
        ]
    )


def centred_grid(n: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(3, n, n, n) coordinates (z, y, x) in voxels, zero at index n // 2."""
    axis = torch.arange(n, dtype=dtype) - n // 2
    return torch.stack(torch.meshgrid(axis, axis, axis, indexing="ij"))


def superellipsoid_level(
    coords: torch.Tensor,
    semi_axes: torch.Tensor,
    exponents: torch.Tensor,
    rotations: torch.Tensor,
) -> torch.Tensor:
    """The superellipsoid function of eq. 2 at rotated coordinates; <= 1 is inside.

    f = (|x/a|^(2/e) + |y/b|^(2/e))^(e/n) + |z/c|^(2/n), evaluated at R^T r so the
    particle appears rotated by R. a = b = c with e = n = 1 is a sphere; e = n = 2 an
    octahedron.

    Parameters
    ----------
    coords : (3, N, N, N) lab coordinates (z, y, x) from ``centred_grid``.
    semi_axes : (B, 3) bounds (a, b, c) along the particle's x, y, z, in voxels.
    exponents : (B, 2) roundness (e, n).
    rotations : (B, 3, 3) rotation matrices acting on (x, y, z) column vectors.

    Returns
    -------
    (B, N, N, N) float tensor.
    """
    xyz = coords.flip(0).flatten(1)  # (3, M) as (x, y, z)
    local = torch.matmul(rotations.to(coords.dtype).transpose(1, 2), xyz)  # R^T r
    n = coords.shape[-1]
    x, y, z = (local[:, i].reshape(-1, n, n, n) for i in range(3))
    a, b, c = (semi_axes[:, i].view(-1, 1, 1, 1).to(coords.dtype) for i in range(3))
    e, nn = (exponents[:, i].view(-1, 1, 1, 1).to(coords.dtype) for i in range(2))
    xy = _power(x / a, 2 / e) + _power(y / b, 2 / e)
    return _power(xy, e / nn) + _power(z / c, 2 / nn)


def _power(base: torch.Tensor, exponent: torch.Tensor) -> torch.Tensor:
    """|base| ** exponent via exp(log), about 1.5x faster than pow with a tensor exponent.

    0 ** p = exp(-inf) = 0 for p > 0, as required.
    """
    return torch.exp(torch.log(base.abs()) * exponent)


def gaussian_matrix(n: int, sigma: torch.Tensor, dtype: torch.dtype = torch.float32):
    """Banded (n, n) matrices that apply a unit-sum Gaussian of width ``sigma`` along an axis.

    Multiplying an axis by this matrix is a 'same'-size convolution with zero boundary.
    ``sigma`` may be a scalar or a (B,) tensor, giving (B, n, n). sigma == 0 gives the
    identity.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    idx = torch.arange(n, dtype=torch.float64)
    d2 = (idx[:, None] - idx[None, :]) ** 2
    s = sigma.reshape(-1, 1, 1)
    kernel = torch.where(
        s > 0, torch.exp(-d2 / (2 * s.clamp_min(1e-12) ** 2)), (d2 == 0).to(torch.float64)
    )
    kernel = kernel / kernel.sum(-1, keepdim=True).clamp_min(1e-300)  # rows sum to 1
    kernel = kernel.to(dtype)
    return kernel[0] if sigma.ndim == 0 else kernel


def apply_separable(volume: torch.Tensor, mz, my, mx) -> torch.Tensor:
    """Apply (.., n, n) matrices along z, y and x of a (B, N, N, N) volume.

    Each matrix multiplies its axis: out[z] = sum_k m[z, k] in[k]. Matrices may carry a
    leading batch axis (B, n, n) to give each volume its own kernel.
    """

    def lift(m):  # (n, n) or (B, n, n) -> broadcastable over (B, N, N, N)
        return m if m.ndim == 2 else m[:, None]

    v = volume @ lift(mx).transpose(-1, -2)  # x (last axis)
    v = lift(my) @ v  # y
    v = (lift(mz) @ v.transpose(-3, -2)).transpose(-3, -2)  # z
    return v
