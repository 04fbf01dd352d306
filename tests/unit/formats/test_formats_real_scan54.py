"""The real APS 34-ID-C scan 54 (../shared/data beside the repository)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import tifffile

from cdiflow.beamtime.preprocess import PreprocessConfig, preprocess
from cdiflow.formats.aps34idc import discover_beamtime, load_calibration, read_scan
from cdiflow.formats.generic import open_scan

# tests/unit/formats/<this file> -> parents[3] is the repository root.
REAL_SCAN54 = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "aps-34idc-scan54"

pytestmark = pytest.mark.skipif(
    not REAL_SCAN54.is_dir(),
    reason=f"real scan 54 not present at {REAL_SCAN54} (../shared/data beside the repo)",
)


@pytest.fixture(scope="module")
def real_scan():
    beamtime = discover_beamtime(REAL_SCAN54)
    (entry,) = beamtime.scans()
    return beamtime, entry, read_scan(beamtime, entry)


def test_discovery_lists_scan_54_with_its_spec_header(real_scan):
    beamtime, entry, _ = real_scan
    assert entry.number == 54 and entry.name == "Staff20-1a_S0054"
    assert entry.command == "ascan  th -0.279996 0.720004  200 0.25"
    assert entry.motor == "th" and entry.points == 201 and len(entry.frame_paths) == 201
    assert len(beamtime.entries) > 400  # the spec log lists every scan of the beamtime


def test_raw_numbers_match_the_readme(real_scan):
    _, _, scan = real_scan
    assert scan.raw.shape == (201, 256, 256) and scan.frames.dtype == np.float32
    assert int(scan.raw.max()) == 165297 and int(scan.raw.sum(dtype=np.int64)) == 46_155_653
    assert scan.metadata["roi_offset"] == [0, 0]


def test_roi_offset_lines_up_the_whitefield_dead_pixels(real_scan):
    """The ROI rule's (0, 0) is what the data say: whitefield zeros are dead frames."""
    _, _, scan = real_scan
    white = tifffile.imread(REAL_SCAN54 / "whitefield.tif")
    never_hit = scan.raw.sum(axis=0) == 0
    overlaps = {
        (r, c): int((white[r : r + 256, c : c + 256] == 0)[never_hit].sum())
        for r in (0, 128, 256)
        for c in (0, 128, 256)
    }
    assert max(overlaps, key=overlaps.get) == (0, 0)
    assert overlaps[(0, 0)] == int((white[:256, :256] == 0).sum())


def test_preprocessing_finds_frame_99_and_the_peak(real_scan):
    _, _, scan = real_scan
    result = preprocess(scan)
    p = result.parameters
    assert p["frame_index"] == 99
    # raw maximum at (126, 127); after the flat field the brightest pixel is one over
    assert abs(p["peak"][0] - 126) <= 1 and abs(p["peak"][1] - 127) <= 1
    # The window follows the measured oversampling: native about 3.8 x 2.9, so the
    # 64 x 64 CNN pattern is cut at bin 1 (the old fixed crop 128 / bin 2 left x at
    # 1.97, under-sampled, its autocorrelation wrapping).
    assert p["bin"] == 1 and p["crop"] == 64 and p["padded_pixels"] == 0
    assert all(2.3 <= o <= 4.5 for o in p["oversampling"])
    assert abs(p["centre"][0] - 126.8) < 1 and abs(p["centre"][1] - 127.7) < 1
    assert result.modulus.shape == (64, 64) and result.modulus.max() == pytest.approx(1.0)
    assert p["masked"]["saturated"] == 0 and p["masked"]["hot"] == 0
    assert result.mask.mean() > 0.99


def test_open_scan_on_the_scan_folder_is_the_same_scan(real_scan):
    beamtime, entry, scan = real_scan
    again = open_scan(entry.folder)
    np.testing.assert_array_equal(again.frames[99], scan.frames[99])
    assert load_calibration(beamtime).gain.shape == (512, 512)
    assert preprocess(again, PreprocessConfig(centre="com")).parameters["frame_index"] == 99
