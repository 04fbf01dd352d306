"""Generated samples: purity in (seed, index), targets, and agreement with the 3D physics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _physics_helpers import random_inputs

from cdiflow.physics.diffraction import literal_slice_pattern, project_along_beam
from cdiflow.physics.fft import normalise_modulus
from cdiflow.physics.generator import (
    PARAMETER_NAMES,
    complex_volumes,
    generate_samples,
    particle_projections,
    reference_global_phase,
    sample_volumes,
    window_sizes,
)

ARRAYS = ("modulus", "amplitude", "phase")


def _assert_same(a, b, rows_a=slice(None), rows_b=slice(None)):
    for name in ARRAYS:
        x, y = getattr(a, name)[rows_a], getattr(b, name)[rows_b]
        assert x.tobytes() == y.tobytes(), name
    for name in PARAMETER_NAMES:
        assert a.parameters[name][rows_a].tobytes() == b.parameters[name][rows_b].tobytes()


def test_sample_is_a_pure_function_of_seed_and_index(config):
    indices = [4, 17, 0, 123456, 9, 10, 11, 3, 250, 1]
    batch = generate_samples(config, 42, indices)
    for row, index in enumerate(indices):
        _assert_same(batch, generate_samples(config, 42, [index]), rows_a=[row])
    order = np.random.default_rng(0).permutation(len(indices))
    shuffled = generate_samples(config, 42, [indices[i] for i in order])
    _assert_same(batch, shuffled, rows_a=order)
    halves = [generate_samples(config, 42, indices[:3]), generate_samples(config, 42, indices[3:])]
    for name in ARRAYS:
        joined = np.concatenate([getattr(h, name) for h in halves])
        assert joined.tobytes() == getattr(batch, name).tobytes()
    np.testing.assert_array_equal(batch.indices, indices)


def test_sample_does_not_depend_on_thread_count(config):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = generate_samples(config, 8, range(24))
        torch.set_num_threads(2)
        two = generate_samples(config, 8, range(24))
    finally:
        torch.set_num_threads(threads)
    _assert_same(one, two)


def test_different_seeds_and_indices_differ(config):
    a, b = generate_samples(config, 1, range(4)), generate_samples(config, 2, range(4))
    for name in ARRAYS:
        assert not np.array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.modulus[0], a.modulus[1])


def test_shapes_dtypes_and_parameter_ranges(config):
    batch = generate_samples(config, 0, range(16))
    assert batch.modulus.shape == (16, 64, 64) and batch.amplitude.shape == (16, 32, 32)
    assert batch.phase.shape == (16, 32, 32) and batch.mask is None
    assert {a.dtype for a in (batch.modulus, batch.amplitude, batch.phase)} == {np.dtype("float32")}
    p = batch.parameters
    for names, (lo, hi) in (
        ("abc", config.semi_axes),
        ("en", config.roundness),
        (("lx", "ly", "lz"), config.correlation_length),
    ):
        values = np.stack([p[k] for k in names])
        assert values.min() >= lo and values.max() <= hi
    quaternion = np.stack([p[k] for k in ("qw", "qx", "qy", "qz")])
    np.testing.assert_allclose(np.linalg.norm(quaternion, axis=0), 1, rtol=1e-12)


def test_targets_follow_the_fixed_maps(config):
    batch = generate_samples(config, 5, range(12))
    np.testing.assert_array_equal(batch.amplitude.max(axis=(1, 2)), 1.0)
    np.testing.assert_array_equal(batch.modulus.max(axis=(1, 2)), 1.0)
    assert batch.amplitude.min() >= 0 and batch.modulus.min() >= 0
    support = batch.amplitude > config.support_threshold
    assert batch.phase.min() >= 0 and batch.phase.max() < 1
    assert np.all(batch.phase[~support] == 0)
    assert np.all(batch.phase[support].reshape(-1) >= 0)
    assert 0.05 < support.mean() < 0.6


def test_phase_target_converts_back_to_the_projection_phase(config):
    seed, count = 5, 12
    batch = generate_samples(config, seed, range(count))
    parameters, noise = random_inputs(config, seed, count)
    projection = reference_global_phase(particle_projections(config, parameters, noise))
    support = torch.from_numpy(batch.amplitude > config.support_threshold)
    phi = 2 * math.pi * torch.from_numpy(batch.phase).double() - math.pi
    wrapped = torch.angle(torch.exp(1j * (phi - torch.angle(projection).double())))
    assert wrapped[support].abs().max() < 1e-5
    amplitude = projection.abs() / projection.abs().amax((1, 2), keepdim=True)
    torch.testing.assert_close(torch.from_numpy(batch.amplitude), amplitude, rtol=0, atol=1e-6)
    # The referenced projection has a real, positive total (the removed global phase).
    total = projection.sum((1, 2))
    assert torch.all(total.real > 0) and torch.all(total.imag.abs() < 1e-4 * total.real)


def test_modulus_is_the_central_slice_of_the_3d_diffraction(config):
    batch = generate_samples(config, 9, range(4))
    literal = literal_slice_pattern(sample_volumes(config, 9, range(4)), config.pattern_size)
    torch.testing.assert_close(
        torch.from_numpy(batch.modulus), normalise_modulus(literal), rtol=0, atol=2e-6
    )


@pytest.mark.parametrize(
    ("semi_axes", "object_size"),
    [((4.0, 8.0), 32), ((7.5, 8.0), 32), ((1.5, 2.5), 32), ((4.0, 7.5), 31)],
)
def test_windows_give_the_full_box_projection(config, semi_axes, object_size):
    config = config.replace(semi_axes=semi_axes, object_size=object_size)
    parameters, noise = random_inputs(config, seed=13, count=24)
    windows = window_sizes(config, parameters)
    assert windows.min() >= 4 and windows.max() <= config.object_size
    fast = particle_projections(config, parameters, noise)
    full = project_along_beam(complex_volumes(config, parameters, noise))
    error = (fast - full).abs().amax((1, 2)) / full.abs().amax((1, 2))
    assert error.max() < 1e-5  # float32 rounding, amplified by the span of tiny particles
    if semi_axes == (1.5, 2.5):
        assert windows.max() <= 16  # small particles get small windows


def test_one_voxel_particles_get_a_flat_phase(config):
    config = config.replace(semi_axes=(0.5, 0.9))  # only the centre voxel is inside
    batch = generate_samples(config, 0, range(4))
    assert np.all(np.isfinite(batch.modulus)) and np.all(np.isfinite(batch.amplitude))
    parameters, noise = random_inputs(config, seed=0, count=4)
    projection = particle_projections(config, parameters, noise)
    assert torch.all(projection.imag == 0) and torch.all(projection.real >= 0)


def test_sample_volumes_are_the_data_set_particles(config):
    volumes = sample_volumes(config, 3, [7, 2])
    parameters, noise = random_inputs(config, 3, 8)
    torch.testing.assert_close(volumes[1], complex_volumes(config, parameters, noise)[2])
