"""Bad cluster-side input through the CLI verbs: one line on stderr, exit code 2, in seconds.

A Ray address that refuses or never answers, an MLflow server that is down, and a sweep
space with an invalid distribution. Nothing here starts Ray: every case must fail before
that. The elapsed time is measured around the whole command (interpreter start and
imports included), against a limit far below the minutes that a hang would take.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LIMIT_S = 45  # imports of torch + ray take ~10 s on a loaded 2-core box; a hang is minutes


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A valid 40-pattern data set, so that only the cluster input is wrong."""
    from cdiflow.formats.dataset_folder import write_dataset
    from cdiflow.formats.layout import DatasetConfig

    root = tmp_path_factory.mktemp("data")
    write_dataset(root, DatasetConfig(seed=1, num_patterns=40, test_patterns=2, shards=1))
    return root


def run_cli(args: list[str], env_extra: dict[str, str], cwd: Path):
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "MLFLOW_TRACKING_URI")}
    env.update(PYTHONPATH=str(REPO / "platform"), RAY_USAGE_STATS_ENABLED="0", **env_extra)
    start = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "cdiflow.cli", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return result, time.monotonic() - start


def assert_one_line_exit_2(result, elapsed: float, verb: str, message: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1, result.stderr[-2000:]
    assert lines[0].startswith(f"cdiflow {verb}: error: ") and message in lines[0], lines[0]
    assert elapsed < LIMIT_S, f"took {elapsed:.1f} s"


@pytest.mark.parametrize("verb", ["train", "tune"])
def test_cluster_address_that_refuses(verb, dataset, tmp_path):
    port = closed_port()
    result, elapsed = run_cli(
        [verb, "--data", str(dataset), "--workspace", str(tmp_path / "ws"),
         "--address", f"127.0.0.1:{port}"],
        {},
        tmp_path,
    )  # fmt: skip
    assert_one_line_exit_2(result, elapsed, verb, f"Ray cluster at 127.0.0.1:{port} does not")
    assert not (tmp_path / "ws").exists(), "nothing may be written"


@pytest.mark.parametrize("verb", ["train", "tune"])
def test_mlflow_server_down(verb, dataset, tmp_path):
    uri = f"http://127.0.0.1:{closed_port()}"
    result, elapsed = run_cli(
        [verb, "--data", str(dataset), "--workspace", str(tmp_path / "ws")],
        {"MLFLOW_TRACKING_URI": uri},
        tmp_path,
    )
    assert_one_line_exit_2(result, elapsed, verb, f"MLflow server at {uri} does not answer")


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("{type: normal, low: 0.001, high: 0.1}", "space.train.lr: distribution type 'normal'"),
        ("{type: loguniform, low: 0.0, high: 0.1}", "space.train.lr: loguniform needs low > 0"),
        ("{type: uniform, low: 0.1, high: 0.01}", "space.train.lr: uniform needs low < high"),
    ],
)
def test_sweep_space_with_invalid_distribution(spec, message, dataset, tmp_path):
    (tmp_path / "sweep.yaml").write_text(f"space:\n  train.lr: {spec}\n")
    result, elapsed = run_cli(
        ["tune", "--data", str(dataset), "--config", str(tmp_path / "sweep.yaml"),
         "--workspace", str(tmp_path / "ws")],
        {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{closed_port()}"},  # never reached
        tmp_path,
    )  # fmt: skip
    assert_one_line_exit_2(result, elapsed, "tune", message)
