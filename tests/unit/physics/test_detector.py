"""The detector model: Poisson counting noise, beamstop and gap masks, raw-frame response."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdiflow.errors import ConfigError
from cdiflow.physics.detector import (
    DetectorConfig,
    dead_pixel_mask,
    detector_mask,
    gain_map,
    poisson_modulus,
    raw_counts,
)
from cdiflow.physics.generator import generate_samples, sample_rng


@pytest.mark.parametrize("photons", [1e3, 1e6])
def test_poisson_counts_sum_to_the_photon_count(photons):
    gen = torch.Generator().manual_seed(0)
    modulus = torch.rand((6, 64, 64), generator=gen, dtype=torch.float64) ** 4
    noisy = poisson_modulus(modulus, photons, [sample_rng(1, i) for i in range(6)])
    counts = noisy.numpy() ** 2
    np.testing.assert_allclose(counts, np.round(counts), atol=1e-6)  # integer counts
    totals = counts.sum(axis=(1, 2))
    assert np.all(np.abs(totals - photons) < 6 * np.sqrt(photons))
    expected = (modulus**2 / (modulus**2).sum((1, 2), keepdim=True) * photons).numpy()
    assert np.corrcoef(counts.ravel(), expected.ravel())[0, 1] > (0.5 if photons < 1e4 else 0.99)


def test_mask_removes_beamstop_and_gaps():
    config = DetectorConfig(beamstop_radius=3.0, gap_width=2, gap_offset=8)
    mask = detector_mask(config, 64)
    yy, xx = np.mgrid[0:64, 0:64] - 32
    assert not mask[yy**2 + xx**2 <= 9].any()
    assert not mask[40:42, :].any() and not mask[:, 40:42].any()
    expected = (yy**2 + xx**2 > 9) & ~np.isin(yy, [8, 9]) & ~np.isin(xx, [8, 9])
    np.testing.assert_array_equal(mask, expected)


def test_generated_patterns_carry_noise_and_mask(config):
    detector = DetectorConfig(photons=1e5, beamstop_radius=2.5, gap_width=1)
    noisy = generate_samples(config.replace(detector=detector), 3, range(5))
    clean = generate_samples(config, 3, range(5))
    assert noisy.mask is not None and noisy.mask.shape == (64, 64)
    assert np.all(noisy.modulus[:, ~noisy.mask] == 0)
    assert not np.array_equal(noisy.modulus, clean.modulus)
    np.testing.assert_array_equal(noisy.amplitude, clean.amplitude)  # targets stay exact
    again = generate_samples(config.replace(detector=detector), 3, [4, 0])
    np.testing.assert_array_equal(again.modulus, noisy.modulus[[4, 0]])
    assert noisy.modulus.max() == 1.0


def test_no_mask_when_widths_are_zero(config):
    assert not DetectorConfig().has_mask
    batch = generate_samples(config.replace(detector=DetectorConfig(photons=1e4)), 0, [0])
    assert batch.mask is None


@pytest.mark.parametrize(
    ("field", "value"), [("photons", -1.0), ("beamstop_radius", -2.0), ("gap_width", -1)]
)
def test_detector_config_rejects_negatives(field, value):
    with pytest.raises(ConfigError, match=field):
        DetectorConfig(**{field: value})


def test_raw_counts_draw_as_one_poisson_call_then_add_dark_and_clip():
    expected = np.random.default_rng(0).uniform(0, 200, (3, 16, 16))
    gain = np.full((16, 16), 0.5)
    dark = np.full((16, 16), 2, dtype=np.int32)
    frames = raw_counts(expected, gain, dark, 90, np.random.default_rng(4))
    reference = np.minimum(np.random.default_rng(4).poisson(expected * gain) + dark, 90)
    assert frames.dtype == np.int32
    np.testing.assert_array_equal(frames, reference)


def test_dead_pixels_fall_inside_the_window_and_gain_stays_in_range():
    rng = np.random.default_rng(1)
    white = gain_map((64, 64), 1000.0, 0.4, rng)
    assert white.dtype == np.float32 and 500 <= white.min() and white.max() <= 1500
    mask = dead_pixel_mask((64, 64), (slice(8, 24), slice(40, 56)), 10, rng)
    rows, cols = np.nonzero(~mask)
    assert 1 <= rows.size <= 10
    assert rows.min() >= 8 and rows.max() < 24 and cols.min() >= 40 and cols.max() < 56
