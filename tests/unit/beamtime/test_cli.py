"""``cdiflow reconstruct``: arguments, exit codes, and a run without Ray (``--local``)."""

from __future__ import annotations

import pytest

from cdiflow import pretrained
from cdiflow.cli import main


def test_bad_arguments_exit_2_before_anything_runs(tmp_path, capsys, good_beamtime, weights_file):
    out = tmp_path / "out"
    base = ["reconstruct", str(good_beamtime), "--out", str(out), "--local"]
    assert main([*base, "--model", str(weights_file), "--scans", "5-x"]) == 2
    assert "bad scan selection" in capsys.readouterr().err
    assert main([*base, "--model", str(weights_file), "--schedule", "5*(HIO+"]) == 2
    err = capsys.readouterr().err
    assert "position" in err and len(err.strip().splitlines()) >= 1
    assert main([*base, "--model", str(tmp_path / "missing.pt")]) == 2
    assert "no such weights file" in capsys.readouterr().err
    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*base, *ws, "--model", "7"]) == 2
    assert "not found" in capsys.readouterr().err
    assert not (out / "scans").exists()  # nothing written


@pytest.mark.skipif(not pretrained.available(), reason="no shipped weights")
def test_a_new_workspace_reconstructs_with_the_shipped_champion(tmp_path, capsys, good_beamtime):
    out = tmp_path / "out"
    args = ["reconstruct", str(good_beamtime), "--out", str(out), "--local", "--scans", "1"]
    args += ["--workspace", str(tmp_path / "new"), "--schedule", "2*(15*HIO+10*ER)"]
    assert main(args) == 0  # no --model: the champion, which is the shipped model
    assert "1 ok, 0 failed" in capsys.readouterr().out
    assert [p.name for p in (out / "scans").glob("*.h5")] == ["Synth26-1a_S0001.h5"]


def test_local_run_writes_results_and_says_where(
    tmp_path, capsys, good_beamtime, weights_file, monkeypatch
):
    out = tmp_path / "out"
    args = ["reconstruct", str(good_beamtime), "--out", str(out), "--local"]
    args += ["--model", str(weights_file), "--scans", "1,3", "--schedule", "2*(15*HIO+10*ER)"]
    assert main(args) == 0
    stdout = capsys.readouterr().out
    assert "2 ok, 0 failed, 0 skipped" in stdout
    assert f"report: {out / 'report.html'}" in stdout
    assert sorted(p.name for p in (out / "scans").iterdir()) == [
        "Synth26-1a_S0001.cxi",
        "Synth26-1a_S0001.h5",
        "Synth26-1a_S0003.cxi",
        "Synth26-1a_S0003.h5",
    ]
