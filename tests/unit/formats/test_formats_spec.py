"""The strict SPEC reader and the 34-ID-C discovery on small hand-written files."""

from __future__ import annotations

import numpy as np
import pytest
import tifffile

from cdiflow.errors import ScanError
from cdiflow.formats.aps34idc import (
    discover_beamtime,
    load_calibration,
    parse_scan_selection,
    read_scan,
    roi_offset_from_spec,
)
from cdiflow.formats.scan import ScanDataError, ScanReadError
from cdiflow.formats.spec import read_spec

SPEC = """#F test.spec
#E 1
#D Sat Feb 01 20:15:38 2020

#S 3  ascan  th -0.1 0.1  3 0.25
#D Tue Feb 04 12:28:23 2020
#UIMDET 34idcTIM2:
#UIMR Name minX sizeX minY sizeY BgdWidth
#Readout 0 64 0 64
#UIMR2  0 16 0 16 0
#UIMR5  8 32 16 32 1
#N 2
#L Theta  Seconds
-0.1 0.25
0.0 0.25
0.05 0.25
0.1 0.25

#S 4  timescan 1
#N 1
#L Seconds
1
"""


def test_read_spec_headers(tmp_path):
    path = tmp_path / "test.spec"
    path.write_text(SPEC)
    scans = read_spec(path)
    assert sorted(scans) == [3, 4]
    s = scans[3]
    assert s.command == "ascan  th -0.1 0.1  3 0.25"
    assert (s.scan_type, s.motor, s.points, s.planned_points) == ("ascan", "th", 4, 4)
    assert s.readout == (0, 64, 0, 64) and s.detector == "34idcTIM2"
    assert [(r.index, r.min_x, r.size_x, r.min_y, r.size_y) for r in s.rois] == [
        (2, 0, 16, 0, 16),
        (5, 8, 32, 16, 32),
    ]
    assert scans[4].motor == "" and scans[4].planned_points is None and scans[4].points == 1


def test_read_spec_refuses_bad_files(tmp_path):
    with pytest.raises(ScanReadError, match="cannot read spec file"):
        read_spec(tmp_path / "absent.spec")
    bad = tmp_path / "bad.spec"
    bad.write_text("#S x ascan\n")
    with pytest.raises(ScanReadError, match="line 1"):
        read_spec(bad)
    empty = tmp_path / "empty.spec"
    empty.write_text("#F nothing\n")
    with pytest.raises(ScanReadError, match="no '#S'"):
        read_spec(empty)


def test_parse_scan_selection():
    assert parse_scan_selection("54,60-62, 7") == [54, 60, 61, 62, 7]
    for bad in ("54,", "5-3", "a"):
        with pytest.raises(ValueError):
            parse_scan_selection(bad)


def _tiny_beamtime(root, frames, dark_value=3, offset=(16, 8)):
    """A 64x64 detector, 32x32 ROI frames at ``offset`` (row, col), per the spec above."""
    (root / "test.spec").write_text(SPEC)
    dark = np.full((64, 64), dark_value, np.int32)
    white = np.full((64, 64), 1000.0, np.float32)
    white[:, 32:] = 2000.0  # right half twice as sensitive
    white[20, 10] = 0.0  # a dead pixel inside the ROI
    tifffile.imwrite(root / "dark.tif", dark)
    tifffile.imwrite(root / "whitefield.tif", white)
    folder = root / "det" / "T_S0003"
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        tifffile.imwrite(folder / f"T_S0003_{i:05d}.tif", frame)
    return white


def test_dark_and_flat_field_correction_at_the_spec_roi(tmp_path):
    rng = np.random.default_rng(0)
    counts = rng.integers(10, 100, (4, 32, 32)).astype(np.int32)
    _tiny_beamtime(tmp_path, counts + 3)
    beamtime = discover_beamtime(tmp_path)
    entries = beamtime.scans()
    assert [e.number for e in entries] == [3] and entries[0].name == "T_S0003"
    assert len(entries[0].frame_paths) == 4 and entries[0].motor == "th"
    scan = read_scan(beamtime, entries[0])
    assert scan.frames.shape == (4, 32, 32) and scan.frames.dtype == np.float32
    # ROI at row 16, col 8 (#UIMR5 minX 8 minY 16): detector columns 8..39, so ROI
    # columns >= 24 see the 2x whitefield; gain = median / whitefield.
    white = tifffile.imread(tmp_path / "whitefield.tif")
    median = float(np.median(white[white > 0]))
    gain = np.where(np.arange(32) + 8 >= 32, median / 2000.0, median / 1000.0)
    expected = counts * gain[None, None, :]
    expected[:, 4, 2] = 0.0  # detector (20, 10) is dead
    np.testing.assert_allclose(scan.frames, expected, rtol=1e-6)
    assert scan.bad_pixels[4, 2] and scan.bad_pixels.sum() == 1
    assert scan.metadata["roi_offset"] == [16, 8]
    np.testing.assert_array_equal(scan.raw, counts + 3)


def test_small_negatives_after_dark_are_clipped(tmp_path):
    frames = np.full((4, 32, 32), 2, np.int32)
    frames[:, 0, 0] = 50
    _tiny_beamtime(tmp_path, frames, dark_value=3)
    beamtime = discover_beamtime(tmp_path)
    scan = read_scan(beamtime, beamtime.scans()[0])
    assert scan.frames.min() == 0.0 and scan.frames[0, 0, 0] > 0


def test_roi_rule_needs_exactly_one_matching_roi(tmp_path):
    path = tmp_path / "test.spec"
    path.write_text(SPEC)
    spec = read_spec(path)[3]
    assert roi_offset_from_spec(spec, (32, 32), (64, 64)) == (16, 8)
    assert roi_offset_from_spec(spec, (64, 64), (64, 64)) == (0, 0)
    with pytest.raises(ValueError, match="no #UIMR ROI of size"):
        roi_offset_from_spec(spec, (24, 24), (64, 64))
    frames = np.ones((4, 24, 24), np.int32)
    _tiny_beamtime(tmp_path, frames)
    beamtime = discover_beamtime(tmp_path)
    with pytest.raises(ScanDataError, match="no #UIMR ROI") as info:
        read_scan(beamtime, beamtime.scans()[0])
    assert info.value.kind == "wrong_shape"


def test_calibration_of_other_shape_is_an_error(tmp_path):
    _tiny_beamtime(tmp_path, np.ones((4, 32, 32), np.int32))
    tifffile.imwrite(tmp_path / "whitefield.tif", np.ones((32, 32), np.float32))
    with pytest.raises(ScanError, match="differs from dark"):
        load_calibration(discover_beamtime(tmp_path))


def test_discovery_of_a_folder_that_is_no_beamtime(tmp_path):
    with pytest.raises(ScanError, match="no \\*.spec file"):
        discover_beamtime(tmp_path)
    with pytest.raises(ScanError, match="not a beamtime folder"):
        discover_beamtime(tmp_path / "absent")


def test_selection_and_scans_without_spec_entry_or_data(tmp_path):
    _tiny_beamtime(tmp_path, np.ones((4, 32, 32), np.int32))
    orphan = tmp_path / "det" / "T_S0009"
    orphan.mkdir()
    tifffile.imwrite(orphan / "T_S0009_00000.tif", np.ones((32, 32), np.int32))
    beamtime = discover_beamtime(tmp_path)
    assert [e.number for e in beamtime.scans()] == [3, 9]  # data folders only
    spec_only, unknown, orphan_entry = beamtime.scans([4, 77, 9])
    for entry, kind, match in (
        (spec_only, "no_data", "scan 4: spec entry has no data folder"),
        (unknown, "no_data", "scan 77: no such scan"),
        (orphan_entry, "no_spec", "data folder without a spec entry"),
    ):
        with pytest.raises(ScanError, match=match) as info:
            read_scan(beamtime, entry)
        assert info.value.kind == kind
