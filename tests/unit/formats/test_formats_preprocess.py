"""Preprocessing: masks, central frame, centring, binning, oversampling, normalisation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdiflow.beamtime.preprocess import (
    PreprocessConfig,
    crop_and_bin,
    estimate_oversampling,
    hot_pixel_mask,
    preprocess,
    saturation_mask,
)
from cdiflow.errors import ConfigError
from cdiflow.formats.aps34idc import discover_beamtime, read_scan
from cdiflow.formats.scan import SaturatedPeak, Scan, ScanDataError
from cdiflow.physics.fft import centred_fft2, normalise_modulus, pad_centre
from cdiflow.physics.generator import sample_volumes


def test_config_is_typed_and_validated():
    assert PreprocessConfig().size == 64
    with pytest.raises(ConfigError, match="unknown key"):
        PreprocessConfig.from_dict({"cropp": 128})
    with pytest.raises(ConfigError, match="multiple of bin"):
        PreprocessConfig(crop=127, bin=2)
    with pytest.raises(ConfigError, match="centre"):
        PreprocessConfig(centre="middle")


def test_crop_and_bin_puts_the_peak_at_the_centre():
    frame = np.zeros((100, 90))
    frame[40, 50] = 8.0
    measured = np.ones_like(frame, bool)
    intensity, mask = crop_and_bin(frame, measured, (40, 50), 64, 2)
    assert intensity.shape == (32, 32) and intensity[16, 16] == 8.0
    # rows 40 - 32 .. 40 + 31 fit; columns 50 - 32 .. 50 + 31 = 81 < 90 fit too
    assert mask.all()
    edge, edge_mask = crop_and_bin(frame, measured, (5, 50), 64, 2)
    assert not edge_mask[:13].any() and edge_mask[14:].all()  # outside the frame
    half = measured.copy()
    half[40, 51] = False  # one of the 4 pixels of the peak's bin
    scaled, _ = crop_and_bin(frame, half, (40, 50), 64, 2)
    assert scaled[16, 16] == pytest.approx(8.0 * 4 / 3)


@pytest.mark.parametrize("height, width", [(10, 14), (20, 7), (16, 16)])
def test_oversampling_of_a_box_is_exact(height, width):
    box = torch.zeros(64, 64, dtype=torch.complex128)
    box[20 : 20 + height, 25 : 25 + width] = 1.0
    intensity = (centred_fft2(box).abs() ** 2).numpy()
    oversampling, extent = estimate_oversampling(intensity, np.ones((64, 64), bool), 0.01)
    assert extent == (height, width)
    assert oversampling == pytest.approx((64 / height, 64 / width))


def test_oversampling_tracks_generator_particles(weak_config):
    """On generator particles the estimate is within 25% of the true extent."""
    rng = np.random.default_rng(0)
    ratios = []
    for index in range(6):
        projection = sample_volumes(weak_config.generator, 3, [index])[0].sum(0)
        amplitude = projection.abs().numpy()
        support = amplitude > 0.05 * amplitude.max()
        true = [np.ptp(np.flatnonzero(support.any(axis=a))) + 1 for a in (1, 0)]
        intensity = (centred_fft2(pad_centre(projection, 64)).abs() ** 2).double().numpy()
        counts = rng.poisson(intensity / intensity.max() * 1e5).astype(float)
        _, extent = estimate_oversampling(counts, np.ones((64, 64), bool), 0.01)
        ratios += [extent[0] / true[0], extent[1] / true[1]]
    assert 0.75 < min(ratios) and max(ratios) < 1.1


def test_synthetic_scan_recovers_peak_frame_and_geometry(weak_beamtime, weak_config):
    root, truth = weak_beamtime
    beamtime = discover_beamtime(root)
    for entry in beamtime.scans():
        result = preprocess(read_scan(beamtime, entry))
        p = result.parameters
        assert p["frame_index"] == truth[entry.number]["central_frame"]
        assert tuple(p["peak"]) == truth[entry.number]["bragg_pixel"]
        assert result.modulus.shape == (64, 64) and result.modulus.dtype == np.float32
        assert result.mask.dtype == bool and result.mask.all()
        # the peak lands at P // 2 (centred convention) and the maximum is 1
        assert result.modulus[32, 32] == result.modulus.max() == pytest.approx(1.0)
        # particles of 8-16 voxels in a 64-pixel pattern: oversampling 4 to 8
        assert all(3.0 < o < 9.0 for o in p["oversampling"])
        assert p["masked"]["calibration"] == weak_config.dead_pixels


def _scan(frames, raw=None):
    frames = np.asarray(frames, np.float32)
    return Scan("t", "t.npy", frames, raw, np.zeros(frames.shape[1:], bool))


def _gaussian_stack(peak=(60, 70), height=5000.0, frames=5):
    yy, xx = np.mgrid[0:128, 0:128]
    blob = height * np.exp(-((yy - peak[0]) ** 2 + (xx - peak[1]) ** 2) / 40.0)
    weights = np.array([0.2, 0.6, 1.0, 0.5, 0.1])[:frames]
    return np.stack([w * blob for w in weights]) + 1.0


def test_modulus_is_normalised_sqrt_like_the_generator():
    config = PreprocessConfig(crop=64, bin=2)
    result = preprocess(_scan(_gaussian_stack()), config)
    frame = _gaussian_stack()[2].astype(np.float64)
    intensity, _ = crop_and_bin(frame, np.ones_like(frame, bool), (60, 70), 64, 2)
    expected = normalise_modulus(torch.from_numpy(np.sqrt(intensity))).numpy()
    np.testing.assert_allclose(result.modulus, expected, rtol=1e-6)
    assert result.parameters["frame_index"] == 2 and result.parameters["peak"] == [60, 70]


def test_hot_and_dead_pixels_are_masked_not_taken_for_the_peak():
    stack = _gaussian_stack()
    stack[:, 20, 20] = 1e6  # hot: far above every neighbour in every frame
    stack[:, 61, 70] = 0.0  # dead inside the peak
    result = preprocess(_scan(stack), PreprocessConfig(crop=64, bin=1))
    p = result.parameters
    assert p["peak"] == [60, 70] and p["masked"]["hot"] == 1 and p["masked"]["dead"] == 1
    assert not result.mask[33, 32] and result.mask.sum() == 64 * 64 - 1
    assert hot_pixel_mask(stack[2].astype(float), PreprocessConfig())[20, 20]


def test_saturation_auto_and_explicit():
    config = PreprocessConfig()
    frame = np.arange(100.0).reshape(10, 10)
    assert not saturation_mask(frame, config)[0].any()  # a unique maximum is not clipping
    full = frame.copy()
    full[0, 0] = 2**16 - 1  # a full 16-bit counter
    assert saturation_mask(full, config)[0][0, 0]
    plateau = frame.copy()
    plateau[:2, :2] = 500.0  # four pixels share the maximum
    mask, level = saturation_mask(plateau, config)
    assert mask.sum() == 4 and level == 500.0
    mask, level = saturation_mask(frame, PreprocessConfig(saturation_level=90))
    assert mask.sum() == 10 and level == 90


def test_saturated_peak_fails_and_saturated_wings_are_masked():
    stack = _gaussian_stack()
    raw = np.minimum(stack, 4000.0)
    with pytest.raises(SaturatedPeak, match="Bragg peak saturated") as info:
        preprocess(_scan(stack, raw), PreprocessConfig(crop=64))
    assert info.value.kind == "saturated_peak"
    raw = stack.copy()
    raw[:, 60, 90] = 1e9  # a saturated pixel far from the peak (explicit level)
    result = preprocess(_scan(stack, raw), PreprocessConfig(crop=64, bin=1, saturation_level=1e8))
    assert result.parameters["masked"]["saturated"] == 1 and not result.mask[32, 52]


def test_too_few_frames_and_bad_frame_choice():
    stack = _gaussian_stack()
    with pytest.raises(ScanDataError, match="need at least 10") as info:
        preprocess(_scan(stack), PreprocessConfig(crop=64, min_frames=10))
    assert info.value.kind == "too_few_frames"
    with pytest.raises(ScanDataError, match="frame 7 of 5"):
        preprocess(_scan(stack), PreprocessConfig(crop=64, frame=7))
    result = preprocess(_scan(stack[2:3]), PreprocessConfig(crop=64))  # one 2D pattern
    assert result.parameters["frames"] == 1


def test_empty_and_non_finite_frames_fail():
    stack = _gaussian_stack()
    stack[3] = 0.0
    with pytest.raises(ScanDataError, match="all-zero frame") as info:
        preprocess(_scan(stack), PreprocessConfig(crop=64))
    assert info.value.kind == "all_zero"
    stack = _gaussian_stack()
    stack[1, 3, 3] = np.nan
    with pytest.raises(ScanDataError, match="NaN"):
        preprocess(_scan(stack), PreprocessConfig(crop=64))
    with pytest.raises(ScanDataError, match="cannot give a 128 crop"):
        preprocess(_scan(np.ones((3, 16, 16))), PreprocessConfig(crop=128, bin=2))
    with pytest.raises(ScanDataError, match="cannot give a 64-pixel pattern"):
        preprocess(_scan(np.ones((3, 12, 12))))  # automatic window: under a quarter of 64


def test_centre_of_mass_option_moves_to_the_intensity_centre():
    stack = _gaussian_stack()
    stack[2, 62:65, 73:76] += 3000.0  # a bright speckle beside the blob's centre
    stack[2, 63, 74] += 5000.0
    by_max = preprocess(_scan(stack), PreprocessConfig(crop=64, centre="max"))
    by_com = preprocess(_scan(stack), PreprocessConfig(crop=64, centre="com"))
    assert by_max.parameters["centre"] == [63, 74]
    assert by_com.parameters["centre"] == [60, 70]
    # the default, the centre of symmetry, is not pulled onto the speckle either
    by_symmetry = preprocess(_scan(stack), PreprocessConfig(crop=64))
    assert np.allclose(by_symmetry.parameters["centre"], [60, 70], atol=0.5)


def test_synthetic_central_frame_is_the_generator_pattern(weak_config):
    """The rocking scan's central plane, sampled every other pixel, is the data-set pattern.

    D = 4 N: sampling the D-point transform at even frequencies is the 2N-point
    transform of the same object (no aliasing: the object fits in 2N), i.e. the
    generator's central-slice pattern of sample (seed, index).
    """
    from cdiflow.physics.beamtime import rocking_intensity
    from cdiflow.physics.generator import generate_samples

    planes = rocking_intensity(weak_config, 9, 4)
    central = planes[weak_config.frames // 2][::2, ::2]
    pattern = generate_samples(weak_config.generator, 9, [4]).modulus[0].astype(np.float64) ** 2
    np.testing.assert_allclose(central / central.max(), pattern / pattern.max(), atol=1e-5)
