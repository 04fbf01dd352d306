"""``OUT/scans/<key>.cxi``: the CXI 1.6 copy of each scan's answer, read with plain h5py."""

from __future__ import annotations

import json

import h5py
import numpy as np
import pytest

from cdiflow import PATTERN_SIZE
from cdiflow.beamtime.cxi import MASK_INVALID
from cdiflow.beamtime.results import read_scan_result
from cdiflow.beamtime.steps import RESULT_SIZE, ReconstructConfig
from cdiflow.cli import main
from cdiflow.pipelines.reconstruct import reconstruct_beamtime

SCHEDULE = "2*(15*HIO+10*ER)"
KEY = "Synth26-1a_S0001"


@pytest.fixture(scope="module")
def run(tmp_path_factory, good_beamtime, weights_file):
    """One ``cdiflow reconstruct --local`` of scan 1: (out folder, the run's config)."""
    out = tmp_path_factory.mktemp("cxi") / "out"
    flags = ["--schedule", SCHEDULE, "--starts", "2"]
    args = ["reconstruct", str(good_beamtime), "--out", str(out), "--local", "--scans", "1"]
    assert main([*args, "--model", str(weights_file), *flags]) == 0
    config = ReconstructConfig.from_yaml(None, {"schedule": SCHEDULE, "starts": 2})
    return out, config


def _text(dataset) -> str:
    value = dataset[()]
    return value.decode() if isinstance(value, bytes) else str(value)


def test_the_cxi_sits_beside_the_h5(run):
    out, _ = run
    assert sorted(p.name for p in (out / "scans").iterdir()) == [f"{KEY}.cxi", f"{KEY}.h5"]


def test_cxi_version_and_nexus_classes(run):
    out, _ = run
    with h5py.File(out / "scans" / f"{KEY}.cxi", "r") as f:
        assert f["cxi_version"][()] == 160 and f.attrs["cxi_version"] == 160
        classes = {
            "entry_1": "NXentry",
            "entry_1/image_1": "NXdata",
            "entry_1/image_1/process_1": "NXprocess",
            "entry_1/data_1": "NXdata",
            "entry_1/instrument_1/detector_1": "NXdetector",
        }
        for group, nx_class in classes.items():
            assert f[group].attrs["NX_class"] == nx_class, group
        assert _text(f["entry_1/image_1/data_type"]) == "complex"
        assert _text(f["entry_1/image_1/data_space"]) == "real"
        assert _text(f["entry_1/sample_1/name"]) == KEY


def test_object_support_and_mask_match_the_h5(run):
    out, _ = run
    arrays, attrs = read_scan_result(out / "scans" / f"{KEY}.h5")
    with h5py.File(out / "scans" / f"{KEY}.cxi", "r") as f:
        image = f["entry_1/image_1"]
        data = image["data"][()]
        support = image["support"][()]
        mask = image["mask"][()]
        detector_mask = f["entry_1/instrument_1/detector_1/mask"][()]
        verdict = _text(image["process_1/verdict"])
    assert data.dtype == np.complex64 and data.shape == (RESULT_SIZE, RESULT_SIZE)
    amplitude = arrays["amplitude"]
    assert amplitude.max() > 0
    np.testing.assert_allclose(np.abs(data), amplitude, rtol=1e-5, atol=1e-6 * amplitude.max())
    strong = amplitude > 0.1 * amplitude.max()
    phase_error = np.angle(np.exp(1j * (np.angle(data) - arrays["phase"])))
    assert np.abs(phase_error[strong]).max() < 1e-4
    assert support.dtype == np.uint8 and support.shape == data.shape
    np.testing.assert_array_equal(support.astype(bool), arrays["support"])
    assert mask.dtype == np.uint32 and mask.shape == (PATTERN_SIZE, PATTERN_SIZE)
    np.testing.assert_array_equal(mask == 0, arrays["mask"])  # 0: measured
    assert set(np.unique(mask)) <= {0, int(MASK_INVALID)}
    np.testing.assert_array_equal(detector_mask, mask)
    assert verdict == attrs["verdict"]


def test_process_records_config_model_preprocessing_and_chi2(run):
    out, config = run
    arrays, attrs = read_scan_result(out / "scans" / f"{KEY}.h5")
    with h5py.File(out / "scans" / f"{KEY}.cxi", "r") as f:
        process = f["entry_1/image_1/process_1"]
        assert _text(process["program"]) == "cdiflow"
        assert _text(process["version"]) and _text(process["date"])[:2] == "20"
        configuration = json.loads(_text(process["configuration"]))
        preprocessing = json.loads(_text(process["preprocessing"]))
        model = _text(process["model"])
        model_info = json.loads(_text(process["model_info"]))
        chi2 = process["chi2"][()]
    assert configuration == json.loads(json.dumps(config.to_dict()))
    assert configuration == attrs["reconstruction"]
    assert preprocessing == attrs["preprocessing"]
    assert model.startswith("sha256:") and model == attrs["summary"]["model_version"]
    assert model_info["model_version"] == model
    assert chi2.shape == (config.iterations,) == arrays["chi2"].shape
    np.testing.assert_array_equal(chi2, arrays["chi2"])


def test_data_1_links_to_the_image(run):
    out, _ = run
    with h5py.File(out / "scans" / f"{KEY}.cxi", "r") as f:
        link = f["entry_1/data_1"].get("data", getlink=True)
        assert isinstance(link, h5py.SoftLink) and link.path == "/entry_1/image_1/data"
        np.testing.assert_array_equal(f["entry_1/data_1/data"][()], f["entry_1/image_1/data"])
        assert f.attrs["default"] == "entry_1" and f["entry_1"].attrs["default"] == "data_1"


def test_a_finished_scan_without_its_cxi_is_redone(tmp_path, good_beamtime, weights_file):
    config = ReconstructConfig(schedule="10*ER", starts=1, guess=None)

    def again():
        lines: list[str] = []
        outcome = reconstruct_beamtime(
            [good_beamtime],
            tmp_path,
            model=str(weights_file),
            config=config,
            selection=[2],
            runner="local",
            progress=lines.append,
        )
        return outcome, lines

    first, _ = again()
    cxi = tmp_path / "scans" / f"{first.rows[0]['key']}.cxi"
    assert first.processed == 1 and cxi.is_file()
    cxi.unlink()  # e.g. a result written before cdiflow wrote CXI files
    redo, lines = again()
    assert redo.processed == 1 and cxi.is_file()
    assert any("no CXI result" in line for line in lines)
    kept, _ = again()
    assert kept.processed == 0 and kept.skipped == 1
