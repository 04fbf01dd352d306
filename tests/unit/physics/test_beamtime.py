"""The beamtime simulation: rocking scans of generator particles on the detector model."""

from __future__ import annotations

import numpy as np
import pytest

from cdiflow.errors import ConfigError
from cdiflow.physics.beamtime import SyntheticBeamtimeConfig, rocking_intensity, simulate_beamtime
from cdiflow.physics.generator import GeneratorConfig

SMALL = SyntheticBeamtimeConfig(scans=2, frames=4, generator=GeneratorConfig(phase_span=0.3))


def _simulate(seed: int):
    dark, white, scans = simulate_beamtime(SMALL, np.random.default_rng(seed))
    return dark, white, list(scans)


def test_a_beamtime_is_a_pure_function_of_the_generator():
    first, again = _simulate(3), _simulate(3)
    for a, b in zip(first[:2], again[:2], strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(first[2], again[2], strict=True):
        np.testing.assert_array_equal(a.frames, b.frames)
        assert a.bragg_pixel == b.bragg_pixel
    assert not np.array_equal(first[2][0].frames, _simulate(4)[2][0].frames)


def test_frames_are_counts_whose_corrected_mean_is_the_rocking_intensity():
    dark, white, scans = _simulate(5)
    assert dark.shape == white.shape == (512, 512) and dark.dtype == np.int32
    assert 1 <= (white == 0).sum() <= SMALL.dead_pixels
    scan = scans[1]
    assert scan.frames.shape == (4, 256, 256) and scan.frames.dtype == np.int32
    assert scan.central_frame == 2 and scan.particle_index == 1
    gain = white[SMALL.roi] / np.median(white[white > 0])
    measured = gain > 0
    corrected = np.where(measured, (scan.frames - dark[SMALL.roi]) / np.where(measured, gain, 1), 0)
    intensity = rocking_intensity(SMALL, scan.particle_seed, scan.particle_index)
    d, (r, c) = intensity.shape[-1], scan.bragg_pixel
    window = corrected[:, r - d // 2 : r + d // 2, c - d // 2 : c + d // 2]
    expected = intensity * SMALL.peak_counts
    # weak phase: the central frame's maximum is the 3D maximum, at the Bragg pixel
    assert expected[2].max() == pytest.approx(SMALL.peak_counts)
    assert np.unravel_index(window[2].argmax(), window[2].shape) == (d // 2, d // 2)
    assert window.sum() == pytest.approx(expected.sum(), rel=0.01)


def test_config_rejects_a_diffraction_larger_than_the_frames():
    with pytest.raises(ConfigError, match="exceeds"):
        SyntheticBeamtimeConfig(frame_size=128)
