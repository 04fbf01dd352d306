"""Particle shapes: superellipsoids (paper eq. 2) at uniformly random 3D orientations.

Volumes are indexed (z, y, x) with the beam along z; the origin sits at index N // 2 of
each axis (centred convention, ``cdiflow.physics.fft``). The shape is evaluated at
rotated coordinates, never by interpolating a rotated voxel grid, so it stays sharp
before the deliberate Gaussian edge smoothing.
"""

from __future__ import annotations

import numpy as np
import torch

TRUNCATE = 4.0  # Gaussian kernels are cut at this many sigma (scipy's default)


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


def centred_axes(n: int, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, ...]:
    """Lab coordinates (z, y, x) of an n^3 centred grid, in voxels, zero at index n // 2.

    Returned as broadcastable (n, 1, 1), (1, n, 1), (1, 1, n) tensors, so that functions
    of the coordinates build whole volumes without materialising a coordinate grid.
    """
    axis = torch.arange(n, dtype=dtype) - n // 2
    return axis.view(n, 1, 1), axis.view(1, n, 1), axis.view(1, 1, n)


def particle_coordinates(
    z: torch.Tensor, y: torch.Tensor, x: torch.Tensor, rotations: torch.Tensor
) -> torch.Tensor:
    """Coordinates R^T r of lab points r in the frames of particles rotated by R.

    Parameters
    ----------
    z, y, x : lab coordinates in voxels, float tensors broadcastable against each other
        (``centred_axes`` for a grid, or three (M,) tensors for M points). Their dtype
        is the result's dtype.
    rotations : (B, 3, 3) rotation matrices acting on (x, y, z) column vectors.

    Returns
    -------
    (B, 3, *broadcast shape) particle-frame coordinates, in (x, y, z) order.
    """
    shape = torch.broadcast_shapes(z.shape, y.shape, x.shape)
    ones = (1,) * len(shape)
    b = rotations.shape[0]
    # Column j of R^T times the lab axis j: three broadcast products, two additions per
    # voxel, and no matrix product over a coordinate grid.
    m = rotations.transpose(1, 2).to(x.dtype)
    u = m[:, :, 0].reshape(b, 3, *ones) * x
    u = u + m[:, :, 1].reshape(b, 3, *ones) * y
    return u + m[:, :, 2].reshape(b, 3, *ones) * z


def superellipsoid_level(
    z: torch.Tensor,
    y: torch.Tensor,
    x: torch.Tensor,
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
    z, y, x, rotations : as ``particle_coordinates``.
    semi_axes : (B, 3) bounds (a, b, c) along the particle's x, y, z, in voxels.
    exponents : (B, 2) roundness (e, n).

    Returns
    -------
    (B, *broadcast shape of z, y, x) tensor of the coordinates' dtype.
    """
    local = particle_coordinates(z, y, x, rotations)
    return superellipsoid_level_local(local, semi_axes, exponents)


def superellipsoid_level_local(
    local: torch.Tensor, semi_axes: torch.Tensor, exponents: torch.Tensor
) -> torch.Tensor:
    """Eq. 2 at particle-frame coordinates (B, 3, ...) in (x, y, z) order -> (B, ...)."""
    dtype, b = local.dtype, local.shape[0]
    ones = (1,) * (local.ndim - 2)
    u = local / semi_axes.to(dtype).reshape(b, 3, *ones)
    e, nn = (exponents[:, i].to(dtype) for i in range(2))
    powers = torch.stack([2 / e, 2 / e, 2 / nn], dim=1).reshape(b, 3, *ones)
    # |u|^p as exp(p log|u|) in place (0 -> exp(-inf) = 0): 1.5x faster than pow.
    t = u.abs_().log_().mul_(powers).exp_()
    xy = t[:, 0] + t[:, 1]
    return xy.log_().mul_((e / nn).reshape(b, *ones)).exp_().add_(t[:, 2])


def superellipsoid_extent(
    semi_axes: np.ndarray, exponents: np.ndarray, rotations: np.ndarray
) -> np.ndarray:
    """Exact half-widths of rotated superellipsoids along the lab axes, in voxels.

    The extent along a unit direction u is the body's support function. With
    p = 2/e, r = 2/n and v = (a u_x, b u_y, c u_z) in the particle's frame it is
    || ( ||(v_x, v_y)||_p* , v_z ) ||_r*, with the dual exponents p* = p / (p - 1)
    (the max-norm for p <= 1, where the body is not convex and the maximum sits on an
    axis). The generator evaluates the shape only inside these bounds.

    Parameters
    ----------
    semi_axes : (B, 3) float (a, b, c); exponents : (B, 2) float (e, n);
    rotations : (B, 3, 3) float, acting on (x, y, z).

    Returns
    -------
    (B, 3) float64 half-widths along the lab (z, y, x) axes.
    """
    semi_axes = np.asarray(semi_axes, dtype=np.float64)
    exponents = np.asarray(exponents, dtype=np.float64)
    rotations = np.asarray(rotations, dtype=np.float64)
    p = 2 / exponents[:, 0:1]
    r = 2 / exponents[:, 1:2]
    out = np.empty((len(semi_axes), 3))
    for k in range(3):  # lab x, y, z: direction u = R^T e_k is row k of R
        v = rotations[:, k, :] * semi_axes
        inner = _dual_norm(v[:, 0], v[:, 1], p[:, 0])
        out[:, 2 - k] = _dual_norm(inner, v[:, 2], r[:, 0])
    return out


def _dual_norm(v1: np.ndarray, v2: np.ndarray, p: np.ndarray) -> np.ndarray:
    """|| (v1, v2) ||_q with q = p / (p - 1) the dual of p (q = inf for p <= 1)."""
    a, b = np.abs(v1), np.abs(v2)
    big = np.maximum(a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(p > 1, p / np.maximum(p - 1, 1e-300), np.inf)
        small = np.minimum(a, b) / np.where(big > 0, big, 1.0)
        norm = big * (1 + small**q) ** (1 / q)
    return np.where(np.isfinite(q), norm, big)


def gaussian_matrix(n: int, sigma: torch.Tensor, dtype: torch.dtype = torch.float32):
    """Banded (n, n) matrices that apply a unit-sum Gaussian of width ``sigma`` along an axis.

    Multiplying an axis by this matrix is a 'same'-size convolution with zero boundary,
    its kernel cut at ``TRUNCATE`` sigma. ``sigma`` may be a scalar or a (B,) tensor,
    giving (B, n, n). sigma == 0 gives the identity.
    """
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    idx = torch.arange(n, dtype=torch.float64)
    d2 = (idx[:, None] - idx[None, :]) ** 2
    s = sigma.reshape(-1, 1, 1)
    # Truncated at 4 sigma, as scipy.ndimage.gaussian_filter does by default: the blur of
    # a particle then vanishes exactly a known distance outside it, so the generator can
    # work in a bounding box and still give the same numbers as the full grid.
    within = d2 <= (TRUNCATE * s) ** 2
    kernel = torch.where(
        s > 0,
        torch.exp(-d2 / (2 * s.clamp_min(1e-12) ** 2)) * within,
        (d2 == 0).to(torch.float64),
    )
    kernel = kernel / kernel.sum(-1, keepdim=True).clamp_min(1e-300)  # rows sum to 1
    kernel = kernel.to(dtype)
    return kernel[0] if sigma.ndim == 0 else kernel


def apply_separable(volume: torch.Tensor, mz, my, mx) -> torch.Tensor:
    """Apply matrices along z, y and x of a (B, Z, Y, X) volume.

    Each matrix multiplies its axis: out[z] = sum_k m[z, k] in[k], so an (m, Z) matrix
    for z gives m output planes (rectangular matrices compute only a window of the
    result). Matrices may carry a leading batch axis (B, m, k) to give each volume its
    own kernel.
    """

    b, z, y, x = volume.shape
    # x and z are each one (Z*Y, X) or (Z, Y*X) product per volume, with no copies;
    # only y needs one small product per z plane. 1.7x faster than per-plane products.
    v = volume.reshape(b, z * y, x) @ mx.transpose(-1, -2)  # x (last axis)
    x2 = v.shape[-1]
    v = (my if my.ndim == 2 else my[:, None]) @ v.view(b, z, y, x2)  # y
    y2 = v.shape[-2]
    v = mz @ v.reshape(b, z, y2 * x2)  # z
    return v.view(b, -1, y2, x2)
