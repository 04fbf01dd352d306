"""Centre of symmetry, binning from the oversampling, and masks (file, --mask, found)."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile
import torch

from cdiflow.beamtime.centring import choose_binning, find_centre, window_at
from cdiflow.beamtime.preprocess import PreprocessConfig, preprocess
from cdiflow.formats.generic import open_scan
from cdiflow.formats.masks import (
    MaskError,
    beamstop_mask,
    gap_mask,
    read_mask_file,
)
from cdiflow.formats.scan import Scan
from cdiflow.physics.fft import centred_fft2, pad_centre


def _real_pattern(size: int, centre: tuple[int, int]) -> np.ndarray:
    """|F|^2 of a real object with negative parts, its k = 0 moved to ``centre``.

    A real object's pattern is centrosymmetric about k = 0; with a negative ring around
    a positive core, F(0) is small and the brightest pixels lie on a ring off centre.
    """
    n = 64
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    r2 = yy**2 + (xx + 0.3 * yy) ** 2 / 1.5
    obj = np.where(r2 < 36, 1.0, 0.0) - np.where((r2 >= 36) & (r2 < 110), 0.42, 0.0)
    obj[n // 2 + 3, n // 2 - 7] += 2.0  # no mirror symmetry of the object itself
    intensity = (centred_fft2(pad_centre(torch.from_numpy(obj), size)).abs() ** 2).numpy()
    shift = (centre[0] - size // 2, centre[1] - size // 2)
    return np.roll(intensity / intensity.max() * 1e6, shift, axis=(0, 1))


def test_centring_finds_the_centre_of_symmetry_not_the_brightest_pixel():
    centre = (117, 131)
    frame = _real_pattern(256, centre)
    peak = np.unravel_index(int(np.argmax(frame)), frame.shape)
    assert np.hypot(peak[0] - centre[0], peak[1] - centre[1]) > 3  # brightest is off
    found = find_centre(frame, np.ones(frame.shape, bool))
    assert np.allclose(found, centre, atol=0.25), found
    scan = Scan("t", "t.npy", frame[None].astype(np.float32), None, np.zeros(frame.shape, bool))
    p = preprocess(scan).parameters
    assert np.allclose(p["centre"], centre, atol=0.25)
    assert tuple(p["peak"]) != centre
    by_max = preprocess(scan, PreprocessConfig(centre="max")).parameters
    mirror = (2 * centre[0] - peak[0], 2 * centre[1] - peak[1])  # as bright, in float32
    assert tuple(by_max["centre"]) in (tuple(map(float, peak)), tuple(map(float, mirror)))


def test_the_centre_survives_a_beamstop_and_gaps():
    centre = (128, 128)
    frame = _real_pattern(256, centre)
    frame[126:131, 126:131] = 0.0
    frame[140:143, :] = 0.0
    measured = frame > 0
    assert np.allclose(find_centre(frame, measured), centre, atol=0.5)


def test_binning_follows_the_measured_oversampling():
    # 8x oversampled at native resolution: bin 3 keeps 8 / 3 >= 2.3
    window = choose_binning((128.0, 128.0), 64, 8.0, (256, 256), 2.3, 8)
    assert (window.bin, window.crop, window.origin) == (3, 192, (31, 31))
    # a frame that cannot hold a binned window keeps a smaller bin, never pads
    window = choose_binning((75.0, 75.0), 64, 8.0, (150, 150), 2.3, 8)
    assert window.bin == 2 and window.crop == 128 and window.origin == (11, 11)
    # off-centre in the frame: a binned window would leave it, so bin 1
    assert choose_binning((128.0, 128.0), 64, 8.0, (150, 150), 2.3, 8).bin == 1
    # 3x oversampled: no binning (2 would leave 1.5)
    assert choose_binning((128.0, 128.0), 64, 3.0, (256, 256), 2.3, 8).bin == 1
    # a 64 x 64 frame is used whole, even with its centre a few pixels off 32
    window, fits = window_at((34.6, 29.2), 64, 1, (64, 64), 8)
    assert fits and window.origin == (0, 0)


def test_beamstop_is_the_zero_region_at_the_centre_only():
    rng = np.random.default_rng(0)
    total = rng.poisson(50.0, (64, 64)).astype(float)
    total[30:35, 29:34] = 0.0  # the beamstop
    total[2, 5] = total[60, 61] = 0.0  # Poisson zeros far out: measured
    found = beamstop_mask(total, (32.0, 31.0))
    assert found.sum() == 25 and found[30:35, 29:34].all()
    assert not found[2, 5] and not found[60, 61]
    assert not beamstop_mask(rng.poisson(50.0, (64, 64)).astype(float), (32, 32)).any()


def test_gaps_are_empty_rows_between_counted_ones():
    total = np.ones((64, 64))
    total[40:43, :] = 0.0  # a gap
    total[:, 10] = 0.0  # a one-column gap
    total[:3, :] = 0.0  # the dark top edge is not a gap
    gaps = gap_mask(total)
    assert gaps[40:43].all() and gaps[:, 10].all()
    assert not gaps[:3, 20:].any() and gaps.sum() == 3 * 64 + 64 - 3


def _pattern_64() -> np.ndarray:
    return _real_pattern(64, (32, 32)).astype(np.float32) + 5.0


@pytest.mark.parametrize("where", ["/entry_1/instrument_1/detector_1/mask", "/entry_1/data_1/mask"])
def test_a_cxi_mask_is_read_with_the_data(tmp_path, where):
    path = tmp_path / "scan.cxi"
    bad = np.zeros((64, 64), np.uint32)
    bad[10, 12] = 1  # CXI: nonzero = bad
    bad[50:52, 40] = 0x8000
    with h5py.File(path, "w") as h5:
        h5["/entry_1/data_1/data"] = _pattern_64()
        h5[where] = bad
    scan = open_scan(path)
    assert np.array_equal(scan.bad_pixels, bad != 0) and scan.metadata["mask_source"] == where
    result = preprocess(scan)
    assert not result.refine_mask[10, 12] and not result.refine_mask[50:52, 40].any()
    assert result.refine_mask.sum() == 64 * 64 - 3
    assert result.parameters["mask_source"] == [f"file:{where}"]


def test_a_nexus_pixel_mask_is_read_with_the_data(tmp_path):
    path = tmp_path / "scan.nxs"
    bad = np.zeros((64, 64), np.int32)
    bad[5, 6] = 2
    with h5py.File(path, "w") as h5:
        h5["/entry/data/data"] = _pattern_64()[None]
        h5["/entry/instrument/detector/pixel_mask"] = bad
    scan = open_scan(path)  # the one data set: pixel_mask is a mask, not data
    assert scan.bad_pixels[5, 6] and scan.bad_pixels.sum() == 1
    assert not preprocess(scan).mask[5, 6]


@pytest.mark.parametrize("suffix", [".npy", ".tif", ".h5"])
def test_a_mask_file_in_every_format(tmp_path, suffix):
    bad = np.zeros((64, 64), np.uint8)
    bad[7, 9] = 1
    path = tmp_path / f"mask{suffix}"
    if suffix == ".npy":
        np.save(path, bad)
    elif suffix == ".tif":
        tifffile.imwrite(path, bad)
    else:
        with h5py.File(path, "w") as h5:
            h5["/entry_1/instrument_1/detector_1/mask"] = bad
    read_mask_file.cache_clear()
    assert np.array_equal(read_mask_file(str(path)), bad != 0)
    scan = Scan("t", "t.npy", _pattern_64()[None], None, np.zeros((64, 64), bool))
    result = preprocess(scan, PreprocessConfig(mask_file=str(path)))
    assert not result.refine_mask[7, 9] and result.parameters["masked"]["user"] == 1
    assert "--mask" in result.parameters["mask_source"]


def test_a_mask_of_the_wrong_shape_or_missing_says_so(tmp_path):
    path = tmp_path / "mask.npy"
    np.save(path, np.zeros((32, 32), bool))
    scan = Scan("t", "t.npy", _pattern_64()[None], None, np.zeros((64, 64), bool))
    with pytest.raises(MaskError, match=r"--mask of shape \(32, 32\) does not match frames"):
        preprocess(scan, PreprocessConfig(mask_file=str(path)))
    with pytest.raises(MaskError, match="not found"):
        read_mask_file(str(tmp_path / "nothing.npy"))
