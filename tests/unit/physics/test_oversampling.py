"""The realistic preset's oversampling: each projected object magnified to a drawn target."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cdiflow.errors import ConfigError
from cdiflow.physics.fft import centred_fft2
from cdiflow.physics.generator import REALISTIC_OVERSAMPLING, GeneratorConfig, generate_samples
from cdiflow.physics.oversampling import magnify, object_extent
from cdiflow.physics.variation import Variation


def _disc(size: int, radius: float, centre: int | None = None) -> torch.Tensor:
    c = size // 2 if centre is None else centre
    y, x = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    inside = ((y - c) ** 2 + (x - c) ** 2) <= radius**2
    return torch.polar(inside.float(), 0.3 * x.float())[None]  # a phase ramp inside


def test_magnifying_by_one_changes_nothing():
    obj = _disc(32, 6.0) * torch.rand(1, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(magnify(obj, torch.tensor([1.0])), obj, atol=1e-6)


def test_magnification_scales_the_width_about_the_centre_pixel():
    obj = _disc(32, 4.0)
    width, reach = object_extent(obj, 0.5)
    assert float(width) == 9 and float(reach) == 4
    twice = magnify(obj, torch.tensor([2.0]))
    width2, reach2 = object_extent(twice, 0.5)
    assert float(width2) == pytest.approx(17, abs=1) and float(reach2) == pytest.approx(8, abs=1)
    assert twice.abs()[0, 16, 16] == pytest.approx(1.0)  # the centre stays where it was


def test_the_realistic_preset_spreads_oversampling_towards_the_measured_range():
    batch = generate_samples(GeneratorConfig.realistic(), 0, range(256))
    paper = generate_samples(GeneratorConfig(), 0, range(256))
    measured = [
        64 / object_extent(torch.from_numpy(b.amplitude).to(torch.complex64), 0.1)[0].numpy()
        for b in (batch, paper)
    ]
    low, high = REALISTIC_OVERSAMPLING
    assert np.median(measured[1]) > 4  # the paper's particles: 4 to 8
    assert np.quantile(measured[0], 0.1) < 2.6 and np.median(measured[0]) < 4
    assert np.median(measured[0]) > low and np.quantile(measured[0], 0.9) < high
    a = batch.amplitude
    rim = np.concatenate([a[:, [0, -1], :], a[:, :, [0, -1]].transpose(0, 2, 1)], 1)
    assert rim.max() < 0.1  # nothing pushed out of the box (MARGIN pixels kept free)


def test_the_pattern_is_the_magnified_objects():
    """Fourier-slice identity after magnification: |FFT| of the targets' object (with the
    phase outside the support unknown to the targets, so compared where the modulus is
    large) matches the noise-free pattern of the same config without noise or mask."""
    variation = Variation(
        photons=(1e12, 1e12), background=(0.0, 0.0), beamstop_radius=(0.0, 0.0),
        gap_probability=0.0, oversampling=REALISTIC_OVERSAMPLING,
    )  # fmt: skip
    batch = generate_samples(GeneratorConfig(variation=variation), 2, range(8))
    amp, phase = torch.from_numpy(batch.amplitude), torch.from_numpy(batch.phase)
    inside = amp > 0.1
    obj = torch.polar(amp * inside, 2 * math.pi * phase - math.pi)
    padded = torch.zeros(8, 64, 64, dtype=torch.complex64)
    padded[:, 16:48, 16:48] = obj
    modulus = centred_fft2(padded).abs()
    modulus = modulus / modulus.amax((-2, -1), keepdim=True)
    measured = torch.from_numpy(batch.modulus)
    bright = measured > 0.05
    assert torch.allclose(modulus[bright], measured[bright], atol=0.08)


def test_oversampling_below_two_is_refused():
    with pytest.raises(ConfigError, match="oversampling"):
        Variation(oversampling=(1.5, 4.0))


def test_without_oversampling_the_config_dict_is_the_one_before_the_key():
    assert "oversampling" not in Variation().to_dict()
    assert Variation.from_dict(Variation().to_dict()) == Variation()
    drawn = GeneratorConfig.realistic()
    assert GeneratorConfig.from_dict(drawn.to_dict()) == drawn
    assert drawn.to_dict()["variation"]["oversampling"] == list(REALISTIC_OVERSAMPLING)
