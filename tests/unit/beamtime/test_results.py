"""Per-scan result files, path sanitisation, the summary table and the report."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from cdiflow.beamtime.results import (
    read_completed_summary,
    read_scan_result,
    result_path,
    scan_key,
    write_summary,
)
from cdiflow.beamtime.steps import (
    empty_row,
    finish_scan,
    plan_scans,
    run_items_locally,
    unwrapped_phase,
)
from cdiflow.errors import OutputDirError

HOSTILE = ["../../x", "..", "/etc/passwd", "a/../../b", "", "~root", "a\x00b", "-rf", "é é"]


@pytest.mark.parametrize("name", HOSTILE)
def test_hostile_names_stay_inside_out(tmp_path, name):
    out = tmp_path / "out"
    key = scan_key(name)
    assert "/" not in key and not key.startswith(".") and key
    path = result_path(out, "scans", key, ".h5")
    assert out.resolve() in path.parents


def test_keys_are_unique_and_stable():
    assert scan_key("a/b") != scan_key("a_b")
    assert scan_key("Staff20-1a_S0054") == "Staff20-1a_S0054"
    assert scan_key("../../x") == scan_key("../../x")


def test_unsanitised_key_is_refused(tmp_path):
    with pytest.raises(OutputDirError):
        result_path(tmp_path, "scans", "../../x", ".h5")


def test_writing_a_row_with_a_hostile_key_fails_that_scan_only(tmp_path, tiny_model, fast_config):
    item = {"scan": "../../x", "key": "../../x", "number": -1, "source": "s"}
    row = empty_row(item, fast_config.iterations)
    summary = finish_scan(row, tmp_path / "out", {})
    assert summary["status"] == "failed" and summary["stage"] == "write"
    assert not (tmp_path / "x.h5").exists() and not list(tmp_path.rglob("*.h5"))


def test_hostile_file_names_in_a_scan_folder(tmp_path, tiny_model, fast_config, good_beamtime):
    folder = tmp_path / "files"
    folder.mkdir()
    stack = np.random.default_rng(0).poisson(5.0, (64, 64)).astype(np.float32)
    for name in ("..npy", "-rf.npy", "a b.npy"):
        np.save(folder / name, stack)
    items = plan_scans([folder])
    assert len({i["key"] for i in items}) == 3
    out = tmp_path / "out"
    rows = run_items_locally(items, tiny_model, fast_config, out, {})
    for row in rows:
        for rel in (row["result"], row["preview"]):
            if rel:
                assert (out / rel).resolve().parent.parent == out.resolve()
    assert all(p.resolve().is_relative_to(out.resolve()) for p in tmp_path.rglob("*.h5"))


def test_result_file_holds_images_and_provenance(good_beamtime, tiny_model, fast_config, tmp_path):
    items = plan_scans([good_beamtime])[:1]
    provenance = {"reconstruction": fast_config.to_dict(), "git_sha": "0123abc"}
    info = '{"ref": "cnn.pt", "version": "7", "config": {"base_width": 8}}'
    rows = run_items_locally(items, tiny_model, fast_config, tmp_path, provenance, info)
    assert rows[0]["status"] == "ok", rows[0]
    arrays, attrs = read_scan_result(tmp_path / rows[0]["result"])
    for name in ("amplitude", "phase", "phase_unwrapped", "support", "chi2", "modulus", "mask"):
        assert name in arrays
    assert arrays["amplitude"].shape == (56, 56) and arrays["modulus"].shape == (64, 64)
    assert arrays["chi2"].shape == (fast_config.iterations,)
    assert arrays["support"].dtype == bool and arrays["support"].any()
    inside = arrays["phase_unwrapped"][arrays["support"]]
    assert np.isfinite(inside).all()
    assert np.isnan(arrays["phase_unwrapped"][~arrays["support"]]).all()
    assert attrs["git_sha"] == "0123abc" and attrs["cdiflow_version"]
    assert attrs["complete"]
    assert attrs["model"]["version"] == "7"
    assert attrs["reconstruction"]["schedule"] == fast_config.schedule
    pre = attrs["preprocessing"]
    for key in ("frame_index", "peak", "crop", "bin", "oversampling", "config", "masked"):
        assert key in pre
    assert attrs["summary"]["status"] == "ok"
    assert read_completed_summary(tmp_path / rows[0]["result"])["key"] == rows[0]["key"]


def test_incomplete_file_is_not_finished(tmp_path):
    path = tmp_path / "scans" / "x.h5"
    path.parent.mkdir()
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 20)  # a truncated HDF5 file
    assert read_completed_summary(path) is None
    assert read_completed_summary(tmp_path / "missing.h5") is None


def test_unwrap_removes_2pi_jumps():
    yy, xx = np.mgrid[0:56, 0:56]
    ramp = 0.6 * xx - 9.0  # spans more than 2 pi
    wrapped = np.angle(np.exp(1j * ramp))
    support = np.zeros((56, 56), bool)
    support[4:28, 4:28] = True
    out = unwrapped_phase(wrapped, support)
    diffs = np.diff(out[10, 4:28])
    assert np.allclose(diffs, 0.6, atol=1e-4)


def test_summary_table_round_trips(tmp_path):
    rows = [
        {"scan": "a", "key": "a", "status": "ok", "cnn_chi2": 0.5, "refined_chi2": 1e-3},
        {"scan": "b", "key": "b", "status": "failed", "reason": "x", "cnn_chi2": float("nan")},
    ]
    parquet, csv = write_summary(tmp_path, rows)
    table = pq.read_table(parquet).to_pylist()
    assert [r["status"] for r in table] == ["ok", "failed"]
    assert table[1]["cnn_chi2"] is None and table[1]["reason"] == "x"
    assert csv.read_text().splitlines()[0].startswith('"scan","key"')
