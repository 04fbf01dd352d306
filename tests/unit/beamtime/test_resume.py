"""Resumability of ``reconstruct_beamtime`` (run in-process: ``runner="local"``)."""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import tifffile

from cdiflow.formats.aps34idc_writer import write_synthetic_beamtime
from cdiflow.physics.beamtime import SyntheticBeamtimeConfig
from cdiflow.pipelines.reconstruct import model_reference, reconstruct_beamtime


def _run(beamtime, out, weights, config, **kw):
    lines = []
    outcome = reconstruct_beamtime(
        [beamtime],
        out,
        model=str(weights),
        config=config,
        runner="local",
        progress=lines.append,
        **kw,
    )
    return outcome, lines


def test_second_run_skips_finished_and_redoes_a_fixed_scan(tmp_path, weights_file, fast_config):
    beamtime = tmp_path / "bt"
    write_synthetic_beamtime(
        beamtime, SyntheticBeamtimeConfig(scans=3, frames=6), np.random.default_rng(3)
    )
    folder = next((beamtime / "AD34idcTIM2").glob("*_S0002"))
    frame = folder / f"{folder.name}_00002.tif"
    saved = tmp_path / "frame.tif"
    shutil.move(frame, saved)  # scan 2 is missing a frame: it fails

    out = tmp_path / "out"
    first, _ = _run(beamtime, out, weights_file, fast_config)
    assert [r["status"] for r in first.rows] == ["ok", "failed", "ok"]
    assert first.rows[1]["error_kind"] == "missing_frames"
    assert first.processed == 3 and first.skipped == 0
    finished = {p.name: p.stat().st_mtime_ns for p in (out / "scans").iterdir()}
    assert len(finished) == 4  # a .h5 and a .cxi per finished scan

    again, lines = _run(beamtime, out, weights_file, fast_config)
    assert again.processed == 1 and again.skipped == 2  # only the failed scan is redone
    assert again.rows[1]["status"] == "failed"

    shutil.move(saved, frame)  # fix it
    fixed, _ = _run(beamtime, out, weights_file, fast_config)
    assert fixed.processed == 1 and fixed.skipped == 2
    assert [r["status"] for r in fixed.rows] == ["ok", "ok", "ok"]
    assert [r["skipped"] for r in fixed.rows] == [True, False, True]
    for name, mtime in finished.items():  # finished results were not rewritten
        assert (out / "scans" / name).stat().st_mtime_ns == mtime
    table = pq.read_table(out / "summary.parquet").to_pylist()
    assert [r["status"] for r in table] == ["ok", "ok", "ok"]
    html = (out / "report.html").read_text()
    assert html.count("<img") == 3

    # a truncated result (e.g. a killed writer without the atomic rename) is redone
    victim = out / "scans" / f"{fixed.rows[0]['key']}.h5"
    victim.write_bytes(victim.read_bytes()[:100])
    redo, _ = _run(beamtime, out, weights_file, fast_config)
    assert redo.processed == 1 and redo.rows[0]["status"] == "ok"


def test_scan_selection(tmp_path, weights_file, fast_config, good_beamtime):
    outcome, _ = _run(
        good_beamtime, tmp_path / "out", weights_file, fast_config, selection=[2, 3, 99]
    )
    assert [r["number"] for r in outcome.rows] == [2, 3, 99]
    assert [r["status"] for r in outcome.rows] == ["ok", "ok", "failed"]
    assert outcome.rows[2]["error_kind"] == "no_data"


def test_model_reference_forms(tmp_path):
    assert model_reference(None) == "models:/cdiflow-cnn@champion"
    assert model_reference("champion") == "models:/cdiflow-cnn@champion"
    assert model_reference("3") == "models:/cdiflow-cnn/3"
    assert model_reference("models:/x@y") == "models:/x@y"
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"")
    assert model_reference(str(weights)) == str(weights.resolve())


def test_tampered_frame_after_finish_is_noticed(tmp_path, weights_file, fast_config, good_beamtime):
    # This test once held the opposite (a finished result was kept whatever its input
    # became); now a result is kept only while its input fingerprint matches.
    out = tmp_path / "out"
    _run(good_beamtime, out, weights_file, fast_config, selection=[1])
    copy = tmp_path / "bt"
    shutil.copytree(good_beamtime, copy)
    frame = next((copy / "AD34idcTIM2").glob("*_S0001/*_00000.tif"))
    tifffile.imwrite(frame, np.zeros((4, 4), np.int32))
    outcome, lines = _run(copy, out, weights_file, fast_config, selection=[1])
    assert outcome.skipped == 0 and outcome.processed == 1
    assert outcome.rows[0]["error_kind"] == "wrong_shape"  # the tampered frame is read
    assert "redone: input changed" in lines[-1], lines
