"""Superellipsoid shapes (paper eq. 2), uniform rotations and Gaussian smoothing kernels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdiflow.physics.generator import draw_parameters, rotation_matrices
from cdiflow.physics.particles import (
    TRUNCATE,
    centred_axes,
    gaussian_matrix,
    random_rotation,
    superellipsoid_extent,
    superellipsoid_level,
)


def _level(axes, semi, expo, rot):
    return superellipsoid_level(
        *axes,
        torch.tensor([semi], dtype=torch.float64),
        torch.tensor([expo], dtype=torch.float64),
        torch.as_tensor(np.asarray(rot)[None], dtype=torch.float64),
    )[0]


def _grid(n=32):
    z, y, x = centred_axes(n, torch.float64)
    return (z, y, x), torch.broadcast_tensors(z, y, x)


def test_sphere_is_the_ball_at_any_rotation(rng):
    (axes, (z, y, x)), a = _grid(), 6.3  # a^2 = 39.69 is 0.31 from any integer r^2
    inside = _level(axes, (a, a, a), (1.0, 1.0), random_rotation(rng)) <= 1
    assert torch.equal(inside, z**2 + y**2 + x**2 <= a**2)


def test_e_n_2_is_the_octahedron():
    (axes, (z, y, x)), a = _grid(), 7.5  # |x|+|y|+|z| is an integer, 0.5 from a
    inside = _level(axes, (a, a, a), (2.0, 2.0), np.eye(3)) <= 1
    assert torch.equal(inside, z.abs() + y.abs() + x.abs() <= a)
    assert inside.sum() == 575  # lattice points with |x|+|y|+|z| <= 7


def test_level_matches_eq2_at_rotated_coordinates(rng):
    semi, expo, rot = (7.0, 4.0, 5.5), (0.6, 1.7), random_rotation(rng)
    points = rng.uniform(-10, 10, (500, 3))  # (x, y, z)
    local = points @ rot  # R^T r for each row
    x, y, zz = np.abs(local / np.array(semi)).T
    e, n = expo
    expected = (x ** (2 / e) + y ** (2 / e)) ** (e / n) + zz ** (2 / n)
    pts = torch.from_numpy(points)
    got = _level((pts[:, 2], pts[:, 1], pts[:, 0]), semi, expo, rot)
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-12)


def test_rotating_by_r_moves_the_shape_by_r(rng):
    semi, expo, rot = (7.0, 4.0, 5.5), (0.6, 1.7), random_rotation(rng)
    local = torch.from_numpy(rng.uniform(-8, 8, (400, 3)))  # (x, y, z) in the particle frame
    lab = local @ torch.from_numpy(rot).T  # R p
    unrotated = _level((local[:, 2], local[:, 1], local[:, 0]), semi, expo, np.eye(3))
    rotated = _level((lab[:, 2], lab[:, 1], lab[:, 0]), semi, expo, rot)
    torch.testing.assert_close(rotated, unrotated, rtol=1e-12, atol=1e-12)
    assert 0 < (unrotated <= 1).sum() < 400  # the points straddle the surface


def test_rotations_are_proper_and_orthonormal(rng):
    for _ in range(50):
        r = random_rotation(rng)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.linalg.det(r) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("source", ["random_rotation", "draw_parameters"])
def test_rotations_are_uniform_on_so3(rng, config, source):
    count = 4000
    if source == "random_rotation":
        rots = np.stack([random_rotation(rng) for _ in range(count)])
    else:
        params = np.stack([draw_parameters(config, rng) for _ in range(count)])
        rots = rotation_matrices(params).numpy()
    zaxis = rots[:, :, 2]  # R e_z: uniform on the sphere under the Haar measure
    assert np.abs(zaxis.mean(0)).max() < 0.05  # std of the mean ~ 0.009
    np.testing.assert_allclose(zaxis.T @ zaxis / count, np.eye(3) / 3, atol=0.03)
    # The rotation angle has density (1 - cos t) / pi: E[tr R] = 0, E[tr R^2] = 1.
    trace = np.trace(rots, axis1=1, axis2=2)
    assert abs(trace.mean()) < 0.05 and abs((trace**2).mean() - 1) < 0.08


def test_extent_bounds_the_shape_tightly(rng):
    axis = torch.arange(-16, 16.01, 0.25, dtype=torch.float64)
    z, y, x = axis.view(-1, 1, 1), axis.view(1, -1, 1), axis.view(1, 1, -1)
    for _ in range(4):
        semi = rng.uniform(3, 8, 3)
        expo = rng.uniform(0.3, 2.5, 2)  # beyond 2: non-convex shapes, max-norm branch
        rot = random_rotation(rng)
        extent = superellipsoid_extent(semi[None], expo[None], rot[None])[0]
        inside = _level((z, y, x), tuple(semi), tuple(expo), rot) <= 1
        zz, yy, xx = torch.broadcast_tensors(z, y, x)
        for k, coord in enumerate((zz, yy, xx)):
            reach = coord[inside].abs().max().item()
            assert extent[k] - 0.3 <= reach <= extent[k] + 1e-9


def test_extent_of_ellipsoids_is_analytic(rng):
    semi = rng.uniform(3, 8, (20, 3))
    rots = np.stack([random_rotation(rng) for _ in range(20)])
    got = superellipsoid_extent(semi, np.ones((20, 2)), rots)
    expected = np.sqrt(((rots * semi[:, None, :]) ** 2).sum(-1))[:, ::-1]  # (x, y, z) -> zyx
    np.testing.assert_allclose(got, expected, rtol=1e-10)


def test_gaussian_matrix_rows_sum_to_one_and_vanish_beyond_truncation():
    m = gaussian_matrix(32, torch.tensor(1.5), torch.float64)
    torch.testing.assert_close(m.sum(-1), torch.ones(32, dtype=torch.float64))
    d = (torch.arange(32)[:, None] - torch.arange(32)[None, :]).abs()
    assert torch.all(m[d > TRUNCATE * 1.5] == 0) and torch.all(m[d <= TRUNCATE * 1.5] > 0)
    assert torch.equal(gaussian_matrix(8, torch.tensor(0.0), torch.float64), torch.eye(8).double())
    batched = gaussian_matrix(16, torch.tensor([0.7, 2.0]))
    assert batched.shape == (2, 16, 16)
    torch.testing.assert_close(batched[1], gaussian_matrix(16, torch.tensor(2.0)))
