"""``cdiflow reconstruct`` with bad input exits 2 with one line and creates no ``--out``.

Regression: ``cdiflow reconstruct SOURCE --out DIR --model 99 --workspace WS`` exited 2
but left an empty ``DIR`` behind (the folder was made before the model was looked up).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from cdiflow.cli import main

REPO = Path(__file__).resolve().parents[3]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unknown_model_in_an_empty_workspace_exits_2_and_writes_nothing(tmp_path, good_beamtime):
    out, workspace = tmp_path / "out", tmp_path / "ws"
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=str(REPO / "platform"), RAY_USAGE_STATS_ENABLED="0")
    args = ["reconstruct", str(good_beamtime), "--out", str(out), "--model", "99"]
    result = subprocess.run(
        [sys.executable, "-m", "cdiflow.cli", *args, "--workspace", str(workspace)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith("cdiflow reconstruct: error: models:/cdiflow-cnn/99 not found")
    assert not out.exists()
    assert not workspace.exists()  # no empty MLflow store made just to find nothing


def test_unknown_model_in_a_workspace_with_a_store_writes_nothing(
    tmp_path, good_beamtime, capsys, monkeypatch
):
    from mlflow import MlflowClient

    from cdiflow.pipelines.tracking import configure

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = tmp_path / "ws"
    uri = configure(workspace)
    assert MlflowClient(uri, registry_uri=uri).search_registered_models() == []  # real store
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    capsys.readouterr()  # MLflow's log lines of creating the store
    out = tmp_path / "out"
    args = ["reconstruct", str(good_beamtime), "--out", str(out), "--model", "99"]
    assert main([*args, "--workspace", str(workspace), "--local"]) == 2
    err = capsys.readouterr().err.strip()
    assert "models:/cdiflow-cnn/99 not found" in err and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize("case", ["weights-file", "source", "address", "out-under-a-file"])
def test_bad_input_exits_2_before_any_folder_is_made(
    case, tmp_path, good_beamtime, weights_file, capsys, monkeypatch
):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    out, workspace = tmp_path / "out", tmp_path / "ws"
    sources = [str(good_beamtime)]
    extra = ["--model", str(weights_file), "--local"]
    expected = ""
    if case == "weights-file":
        extra = ["--model", str(tmp_path / "missing.pt"), "--local"]
        expected = "no such weights file"
    elif case == "source":
        sources.append(str(tmp_path / "no-such-beamtime"))
        expected = f"beamtime source(s) not found: {tmp_path / 'no-such-beamtime'}"
    elif case == "address":
        port = closed_port()
        extra = ["--model", str(weights_file), "--address", f"127.0.0.1:{port}"]
        expected = f"127.0.0.1:{port} does not answer"
    else:
        (tmp_path / "file").write_text("not a folder")
        out = tmp_path / "file" / "out"
        expected = "cannot create --out"
    argv = ["reconstruct", *sources, "--out", str(out), "--workspace", str(workspace), *extra]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cdiflow reconstruct: error: ") and "\n" not in err, err
    assert expected in err, err
    assert not out.exists()
    assert not workspace.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["file"] if case == "out-under-a-file" else []
    )
