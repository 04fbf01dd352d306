"""``cdiflow tune`` end to end on a local Ray: a tiny sweep interrupted, then resumed.

Three trials of two epochs on a 57-pattern data set, one trial at a time (2 CPUs). The
first run is interrupted with SIGINT (Ctrl-C) once the second trial has started; it
exits 130 and leaves a sweep that ``Tuner.can_restore`` accepts. Re-running the same
command continues it. Then: an MLflow parent run with one child run per trial (none
left RUNNING), the best trial registered as ``cdiflow-cnn`` with alias ``candidate``,
``summary.csv`` and ``trials.png`` in the sweep folder and on the parent run.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# A line Ray forwards from a worker or actor: "(Name pid=123) ...", maybe in colour.
RAY_WORKER_LINE = re.compile(r"^(\x1b\[[0-9;]*m)?\([^)]*pid=\d+")

SWEEP_YAML = """\
trials: 3
epochs: 2
grace_period: 1
reduction_factor: 2
seed: 7
space:
  train.lr: {type: loguniform, low: 0.001, high: 0.03}
  train.schedule: {type: choice, values: [step, cosine, onecycle]}
  train.loss.physics: {type: uniform, low: 1.0, high: 8.0}
  train.batch_size: {type: choice, values: [8, 16]}
  model.base_width: {type: fixed, value: 4}
"""

TRAIN_YAML = """\
model: {base_width: 4, depth: 3}
train: {epochs: 2, batch_size: 16, optimizer: adamw, lr: 0.003, warmup_epochs: 0.0}
scaling: {workers: 1, cpus_per_worker: 0.5}
"""


def write_dataset(root: Path, num_patterns: int = 60, test_patterns: int = 4) -> Path:
    """A small data set in the real format (manifest + shards), written without Ray."""
    from cdiflow.formats import dataset_folder
    from cdiflow.formats.layout import DatasetConfig

    config = DatasetConfig(
        seed=3, num_patterns=num_patterns, test_patterns=test_patterns, shards=2, chunk_size=16
    )
    dataset_folder.write_dataset(root, config)
    return root


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    for key in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    env.update(
        PYTHONPATH=str(REPO / "platform"),
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        MLFLOW_DISABLE_TELEMETRY="true",
        RAY_DATA_DISABLE_PROGRESS_BARS="1",
    )
    return env


def stop_group(process: subprocess.Popen) -> None:
    """End a CLI run that a failed assertion left behind (its own session only)."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)


def test_sweep_interrupted_resumes_and_registers_candidate(tmp_path):
    data = write_dataset(tmp_path / "data")
    (tmp_path / "sweep.yaml").write_text(SWEEP_YAML)
    (tmp_path / "train.yaml").write_text(TRAIN_YAML)
    workspace = tmp_path / "ws"
    command = [
        sys.executable, "-m", "cdiflow.cli", "tune",
        "--data", str(data),
        "--config", str(tmp_path / "sweep.yaml"),
        "--train-config", str(tmp_path / "train.yaml"),
        "--workspace", str(workspace),
        "--name", "tiny",
    ]  # fmt: skip
    sweep_dir = workspace / "sweeps" / "tiny"
    records = sweep_dir / "trial-records"
    out_path, err_path = tmp_path / "first.out", tmp_path / "first.err"
    with out_path.open("w") as out, err_path.open("w") as err:  # files: pipes would fill up
        first = subprocess.Popen(
            command, cwd=tmp_path, env=cli_env(), stdout=out, stderr=err, start_new_session=True
        )
        try:
            deadline = time.monotonic() + 480
            # the second trial's record appears once the first has ended (one at a time)
            while len(list(records.glob("*.json"))) < 2:
                assert first.poll() is None, f"tune exited: {err_path.read_text()[-3000:]}"
                assert time.monotonic() < deadline, "no second trial within 480 s"
                time.sleep(1)
            first.send_signal(signal.SIGINT)
            first.wait(timeout=180)
        finally:
            stop_group(first)
    assert first.returncode == 130, err_path.read_text()[-3000:]
    # Ray workers may still flush a traceback after our message, and the driver a shutdown
    # line or two: among the driver's own last lines is the message.
    own = [line for line in err_path.read_text().splitlines() if not RAY_WORKER_LINE.match(line)]
    assert any("re-run the same command" in line for line in own[-5:]), own[-5:]
    assert not (sweep_dir / "summary.csv").exists(), "an interrupted sweep must not summarise"

    second = subprocess.run(
        command, cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=600
    )
    assert second.returncode == 0, second.stderr[-3000:]
    lines = second.stdout.splitlines()
    start = len(lines) - 1 - lines[::-1].index("{")  # the outcome JSON printed last
    outcome = json.loads("\n".join(lines[start:]))
    assert outcome["resumed"] is True
    assert len(outcome["trials"]) == 3

    rows = list(csv.DictReader((sweep_dir / "summary.csv").open()))
    assert len(rows) == 3
    assert {"train.lr", "train.schedule", "val_chi2", "status"} <= set(rows[0])
    assert all(r["status"] in ("COMPLETED", "STOPPED_EARLY") for r in rows), rows
    assert any(r["status"] == "COMPLETED" for r in rows)
    png = sweep_dir / "trials.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    check_tracking(workspace, outcome, rows)


def check_tracking(workspace: Path, outcome: dict, rows: list[dict]) -> None:
    from mlflow import MlflowClient

    uri = f"sqlite:///{workspace.resolve() / 'mlflow.db'}"
    client = MlflowClient(uri, registry_uri=uri)
    experiment = client.get_experiment_by_name("cdiflow-tune")
    runs = client.search_runs([experiment.experiment_id])
    parent = [r for r in runs if r.info.run_id == outcome["parent_run_id"]]
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    children = [
        r for r in runs if r.data.tags.get("mlflow.parentRunId") == outcome["parent_run_id"]
    ]
    assert len(children) == 3, "one child run per trial, also for the resumed one"
    assert {r.info.run_id for r in children} == {row["run_id"] for row in rows}
    assert all(r.info.status in ("FINISHED", "KILLED") for r in children)
    assert all("val_chi2" in r.data.metrics for r in children)
    artifacts = {a.path for a in client.list_artifacts(outcome["parent_run_id"])}
    assert {"summary.csv", "trials.png"} <= artifacts

    best = min(rows, key=lambda r: float(r["val_chi2"]))
    candidate = client.get_model_version_by_alias("cdiflow-cnn", "candidate")
    assert candidate.run_id == best["run_id"]
    assert outcome["registered"]["version"] == str(candidate.version)
    # the first version in an empty registry wins the champion rule
    champion = client.get_model_version_by_alias("cdiflow-cnn", "champion")
    assert champion.version == candidate.version
