"""Gaussian-correlated random phase (paper eq. 3) and its span inside the particle."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _physics_helpers import random_inputs

from cdiflow.physics.generator import particle_fields
from cdiflow.physics.particles import centred_axes, particle_coordinates, random_rotation
from cdiflow.physics.phase_field import correlated_field, sample_field, scale_to_span


def _noise(count: int, n: int, seed: int = 7) -> torch.Tensor:
    return torch.randn((count, n, n, n), generator=torch.Generator().manual_seed(seed))


def _lag_correlation(field: torch.Tensor, lag: int, dim: int) -> float:
    """Correlation of voxels ``lag`` apart along ``dim``, in the interior (no box edges)."""
    inner = field[:, 12:-12, 12:-12, 12:-12]
    a = inner.narrow(dim, 0, inner.shape[dim] - lag)
    b = inner.narrow(dim, lag, inner.shape[dim] - lag)
    a, b = a - a.mean(), b - b.mean()
    return float((a * b).mean() / (a.std() * b.std()))


def test_correlation_grows_with_length_as_eq3_predicts():
    noise = _noise(4, 56)
    previous = [0.0, 0.0]
    for length in (2.0, 4.0, 8.0):
        field = correlated_field(noise, torch.full((4, 3), length))
        for i, lag in enumerate((1, 2)):
            measured = _lag_correlation(field, lag, dim=3)
            # Noise convolved with exp(-2 x^2 / L^2) has correlation exp(-d^2 / L^2).
            assert measured == pytest.approx(math.exp(-(lag**2) / length**2), abs=0.04)
            assert measured > previous[i]
            previous[i] = measured


def test_each_axis_has_its_own_length():
    lengths = torch.tensor([[2.0, 8.0, 4.0]]).repeat(4, 1)  # (Lx, Ly, Lz)
    field = correlated_field(_noise(4, 56), lengths)
    along_x, along_y, along_z = (_lag_correlation(field, 1, dim) for dim in (3, 2, 1))
    assert along_x < along_z < along_y


def test_sampling_a_ramp_gives_the_particle_coordinate(rng):
    n = 32
    ramp = (torch.arange(n, dtype=torch.float64) - n // 2).view(1, 1, 1, n).expand(2, n, n, n)
    rotations = torch.from_numpy(np.stack([random_rotation(rng) for _ in range(2)]))
    local = particle_coordinates(*centred_axes(12, torch.float64), rotations)
    sampled = sample_field(ramp.contiguous(), local)  # trilinear is exact on a ramp
    torch.testing.assert_close(sampled, local[:, 0], rtol=0, atol=1e-9)


def test_phase_turns_with_the_particle(config):
    parameters, noise = random_inputs(config, seed=4, count=1)
    parameters = np.repeat(parameters, 2, axis=0)
    parameters[0, 8:] = (1.0, 0.0, 0.0, 0.0)  # identity
    parameters[1, 8:] = (math.sqrt(0.5), 0.0, 0.0, math.sqrt(0.5))  # 90 degrees about z
    amplitude, phase = particle_fields(config, parameters, noise.repeat(2, 1, 1, 1))
    # R maps the particle's x onto lab y: the rotated particle is the other one turned
    # a quarter about the beam (its origin at index 16; compare away from the box edge).
    inner = (slice(1, None),) * 3
    turned_amplitude = torch.rot90(amplitude[0][inner], -1, dims=(1, 2))
    turned_phase = torch.rot90(phase[0][inner], -1, dims=(1, 2))
    torch.testing.assert_close(amplitude[1][inner], turned_amplitude, rtol=0, atol=1e-5)
    where = amplitude[1][inner] > 0.5
    torch.testing.assert_close(phase[1][inner][where], turned_phase[where], rtol=0, atol=1e-4)


@pytest.mark.parametrize("span", [2 * math.pi, 1.0])
def test_span_inside_is_exact(span):
    field = _noise(3, 16)
    inside = torch.rand(field.shape, generator=torch.Generator().manual_seed(1)) < 0.2
    phase = scale_to_span(field, inside, span)
    lo = torch.where(inside, phase, math.inf).flatten(1).amin(1)
    hi = torch.where(inside, phase, -math.inf).flatten(1).amax(1)
    assert torch.all(lo == -span / 2) and torch.all(hi == span / 2)


@pytest.mark.parametrize("span", [2 * math.pi, 1.5])
def test_generated_particles_span_exactly_inside(config, span):
    config = config.replace(phase_span=span)
    parameters, noise = random_inputs(config, seed=3, count=6)
    amplitude, phase = particle_fields(config, parameters, noise)
    # The undilated particle is where the smoothed indicator is at least one half.
    for amp, ph in zip(amplitude, phase, strict=True):
        inside = ph[amp > 0.5]
        assert inside.min().item() >= -span / 2 - 1e-6 and inside.max() <= span / 2 + 1e-6
        assert np.ptp(inside.numpy()) > 0.8 * span


def test_flat_field_inside_gives_zero_phase():
    field = _noise(2, 8)
    inside = torch.zeros(field.shape, dtype=torch.bool)
    inside[:, 4, 4, 4] = True  # one voxel: no range to scale
    phase = scale_to_span(field, inside, 2 * math.pi)
    assert torch.all(phase == 0)
