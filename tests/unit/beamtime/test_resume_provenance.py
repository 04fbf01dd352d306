"""A re-run keeps a finished scan only when the model, the config and the input match.

Regression: re-running ``cdiflow reconstruct`` with another model, schedule or config
skipped every scan finished with the old one (the result file only had to be complete),
and the summary did not say which model and config made each row. Run in-process
(``runner="local"``), no Ray.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow.parquet as pq
import pytest

from cdiflow.cli import main
from cdiflow.formats.aps34idc_writer import write_synthetic_beamtime
from cdiflow.physics.beamtime import SyntheticBeamtimeConfig
from cdiflow.pipelines.reconstruct import reconstruct_beamtime

PROVENANCE = ("model_version", "config_hash", "input_fingerprint")


@pytest.fixture()
def beamtime(tmp_path):
    root = tmp_path / "bt"
    write_synthetic_beamtime(
        root, SyntheticBeamtimeConfig(scans=2, frames=6), np.random.default_rng(7)
    )
    return root


def _run(source, out, weights, config, **kw):
    lines: list[str] = []
    outcome = reconstruct_beamtime(
        [source],
        out,
        model=str(weights),
        config=config,
        runner="local",
        progress=lines.append,
        **kw,
    )
    return outcome, lines


def _table(out):
    return pq.read_table(out / "summary.parquet").to_pylist()


def _other_weights(tmp_path):
    from cdiflow.models import ModelConfig, build_model, save_weights

    config = ModelConfig(base_width=8)
    path = tmp_path / "other.pt"
    save_weights(path, build_model(config, seed=1).eval(), config, {"val_chi2": 2.0})
    return path


def _scan_lines(lines):
    return [line for line in lines if line.startswith("[")]


def test_rerun_skips_and_a_new_schedule_redoes_with_its_hash(
    tmp_path, beamtime, weights_file, fast_config
):
    out = tmp_path / "out"
    first, _ = _run(beamtime, out, weights_file, fast_config)
    assert first.processed == 2 and [r["status"] for r in first.rows] == ["ok", "ok"]
    table = _table(out)
    for name in PROVENANCE:
        assert all(row[name] for row in table), name
    assert {row["config_hash"] for row in table} == {fast_config.config_hash}
    assert all(row["model_version"].startswith("sha256:") for row in table)

    again, _ = _run(beamtime, out, weights_file, fast_config)
    assert again.processed == 0 and again.skipped == 2

    # batch sizes do not change the answer: still skipped
    batches = fast_config.replace(refine_batch=3, cnn_batch=5)
    assert batches.config_hash == fast_config.config_hash
    assert _run(beamtime, out, weights_file, batches)[0].skipped == 2

    other = fast_config.replace(schedule="2*(10*HIO+10*ER)")
    assert other.config_hash != fast_config.config_hash
    redone, lines = _run(beamtime, out, weights_file, other)
    assert redone.processed == 2 and redone.skipped == 0
    assert all("redone: config changed" in line for line in _scan_lines(lines)), lines
    assert {row["config_hash"] for row in _table(out)} == {other.config_hash}
    assert [row["skipped"] for row in _table(out)] == [False, False]


def test_another_weights_file_redoes(tmp_path, beamtime, weights_file, fast_config):
    out = tmp_path / "out"
    _run(beamtime, out, weights_file, fast_config)
    before = {row["model_version"] for row in _table(out)}
    redone, lines = _run(beamtime, out, _other_weights(tmp_path), fast_config)
    assert redone.processed == 2 and redone.skipped == 0
    assert all("redone: model changed" in line for line in _scan_lines(lines)), lines
    after = {row["model_version"] for row in _table(out)}
    assert len(after) == 1 and after != before


def test_touching_a_frame_redoes_only_that_scan(tmp_path, beamtime, weights_file, fast_config):
    out = tmp_path / "out"
    first, _ = _run(beamtime, out, weights_file, fast_config)
    frame = next(beamtime.glob("*/*_S0002/*_00001.tif"))
    stat = frame.stat()
    os.utime(frame, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    redone, lines = _run(beamtime, out, weights_file, fast_config)
    assert redone.processed == 1 and redone.skipped == 1
    assert [r["skipped"] for r in redone.rows] == [True, False]
    assert "redone: input changed" in _scan_lines(lines)[0], lines
    table = _table(out)
    assert table[1]["input_fingerprint"] != first.rows[1]["input_fingerprint"]
    assert table[0]["input_fingerprint"] == first.rows[0]["input_fingerprint"]


def test_touching_a_single_file_source_redoes_it(tmp_path, weights_file, fast_config):
    source = tmp_path / "pattern.npy"
    np.save(source, np.random.default_rng(0).poisson(5.0, (64, 64)).astype(np.float32))
    out = tmp_path / "out"
    assert _run(source, out, weights_file, fast_config)[0].processed == 1
    assert _run(source, out, weights_file, fast_config)[0].skipped == 1
    stat = source.stat()
    os.utime(source, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    redone, lines = _run(source, out, weights_file, fast_config)
    assert redone.processed == 1 and "redone: input changed" in _scan_lines(lines)[0]


def test_force_redoes_everything(tmp_path, beamtime, weights_file, fast_config):
    out = tmp_path / "out"
    _run(beamtime, out, weights_file, fast_config)
    forced, lines = _run(beamtime, out, weights_file, fast_config, force=True)
    assert forced.processed == 2 and forced.skipped == 0
    assert all("redone: --force" in line for line in _scan_lines(lines)), lines


def test_cli_force_flag(tmp_path, capsys, beamtime, weights_file):
    out = tmp_path / "out"
    args = ["reconstruct", str(beamtime), "--out", str(out), "--local", "--scans", "1"]
    args += ["--model", str(weights_file), "--schedule", "2*(15*HIO+10*ER)"]
    assert main(args) == 0
    assert main(args) == 0
    assert "1 ok, 0 failed, 1 skipped" in capsys.readouterr().out
    assert main([*args, "--force"]) == 0
    assert "1 ok, 0 failed, 0 skipped" in capsys.readouterr().out
