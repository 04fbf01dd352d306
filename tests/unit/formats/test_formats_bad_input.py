"""Each bad-input kind gives its typed error, one line naming the file."""

from __future__ import annotations

import pytest

from cdiflow.beamtime.preprocess import preprocess
from cdiflow.errors import InputError, ScanError
from cdiflow.formats.aps34idc import discover_beamtime, read_scan
from cdiflow.formats.generic import open_scan

KINDS = (
    "truncated_tiff",
    "missing_frames",
    "nan_counts",
    "negative_counts",
    "all_zero",
    "wrong_shape",
    "saturated_peak",
    "spec_without_data",
    "missing_calibration",
    "unreadable_hdf5",
    "not_a_scan",
)


def _read_and_preprocess(case):
    if case.scan is None:
        scan = open_scan(case.source)
    else:
        beamtime = discover_beamtime(case.source)
        scan = read_scan(beamtime, beamtime.scans([case.scan])[0])
    return preprocess(scan)


def test_every_kind_is_written(corrupt_cases):
    _, cases = corrupt_cases
    assert sorted({c.kind for c in cases}) == sorted(KINDS)


@pytest.mark.parametrize("kind", KINDS)
def test_bad_input_kind_raises_its_typed_error(corrupt_cases, kind):
    _, cases = corrupt_cases
    for case in (c for c in cases if c.kind == kind):
        with pytest.raises(ScanError) as info:
            _read_and_preprocess(case)
        error = info.value
        assert isinstance(error, InputError)  # the CLI's exit code 2
        assert error.kind == case.error_kind, str(error)
        message = str(error)
        assert "\n" not in message and message.startswith(error.path)
        assert case.source.split(":")[0].split("/")[-1] in message or str(case.scan) in message


def test_good_scans_of_the_corrupt_beamtime_still_read(corrupt_cases):
    beamtime_dir, _ = corrupt_cases
    beamtime = discover_beamtime(beamtime_dir)
    good = [e for e in beamtime.scans() if e.number in (1, 2)]
    assert len(good) == 2
    for entry in good:
        result = preprocess(read_scan(beamtime, entry))
        assert result.modulus.shape == (64, 64) and result.modulus.max() == pytest.approx(1.0)


def test_saturated_reason_names_the_level(corrupt_cases):
    _, cases = corrupt_cases
    case = next(c for c in cases if c.kind == "saturated_peak")
    with pytest.raises(ScanError, match=r"Bragg peak saturated: \d+ pixel\(s\) at >= 65535"):
        _read_and_preprocess(case)


def test_scan_errors_survive_pickling():
    """Ray ships worker exceptions by pickle; the path, reason and kind must survive."""
    import pickle

    from cdiflow.formats.scan import CalibrationMissing, SaturatedPeak, ScanDataError

    for error in (
        ScanDataError("a/b", "2 all-zero frame(s)", kind="all_zero"),
        SaturatedPeak("c", "Bragg peak saturated"),
        CalibrationMissing("d/dark.tif", "file not found"),
    ):
        again = pickle.loads(pickle.dumps(error))
        assert type(again) is type(error) and str(again) == str(error)
        assert (again.path, again.reason, again.kind) == (error.path, error.reason, error.kind)
