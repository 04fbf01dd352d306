"""The whole platform through ``ray job submit`` on a real two-node Ray cluster.

``cluster/local.sh start 1`` starts a head and one worker node on this machine with
token auth on (the real deployment); a real ``mlflow server`` (SQLite, artifacts proxied)
listens on 127.0.0.1. Then, each as a submitted job with the runtime_env recipe
(working_dir + py_modules + env_vars with MLFLOW_TRACKING_URI):

1. ``jobs/generate.py``: a tiny data set on the filesystem both nodes share here;
2. ``jobs/train.py``: 2 Train workers, one per node (2 CPUs each on 3-CPU nodes cannot
   pack onto one node), registered in the server's registry; the first version in an
   empty registry wins the champion rule;
3. the registry is queried over HTTP: ``cdiflow-cnn@champion`` is the trained run;
4. ``jobs/reconstruct.py``: a small synthetic beamtime with
   ``models:/cdiflow-cnn@champion``.

Every job must succeed and leave its outputs. Teardown runs even on failure: the cluster
stops through local.sh and the MLflow server's process group ends; no process of
either may be left.
"""

from __future__ import annotations

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import psutil
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LOCAL_SH = REPO / "cluster" / "local.sh"
BIN = Path(sys.executable).parent
NODE_CPUS = 3  # logical CPUs per node; 2 per Train worker forces one worker per node

TRAIN_YAML = """\
model: {base_width: 4, depth: 3}
train: {epochs: 2, batch_size: 16, optimizer: adamw, lr: 0.003}
scaling: {workers: 2, cpus_per_worker: 2.0, torch_threads: 1}
run: {experiment: e2e, max_failures: 0}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def base_env(state: Path) -> dict[str, str]:
    """Environment of local.sh and its nodes: this tree's cdiflow, quiet Ray, no old auth."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    for key in ("RAY_API_SERVER_ADDRESS", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    env.update(
        CDIFLOW_LOCAL_RAY_STATE_DIR=str(state),
        CDIFLOW_LOCAL_RAY_NUM_CPUS=str(NODE_CPUS),
        CDIFLOW_LOCAL_RAY_OBJECT_STORE_BYTES=str(150 * 1024 * 1024),
        PATH=str(BIN) + os.pathsep + env.get("PATH", ""),
        RAY_BIN=str(BIN / "ray"),
        RAY_USAGE_STATS_ENABLED="0",
        MLFLOW_DISABLE_TELEMETRY="true",
        PYTHONPATH=str(REPO / "platform"),
    )
    return env


def exports(state: Path) -> dict[str, str]:
    """What ``local.sh env`` prints, as a dict."""
    pairs = {}
    for line in (state / "env.sh").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        pairs[key] = value
    return pairs


def session_pids(sids: set[int]) -> set[int]:
    pids = set()
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) in sids:
                pids.add(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return pids


def cluster_sids(state: Path) -> set[int]:
    return {int(t) for f in (state / "nodes").glob("*.sid") if (t := f.read_text().strip())}


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def start_mlflow(folder: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (folder / "mlflow.log").open("wb")
    server = subprocess.Popen(
        [
            str(BIN / "mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
            "--artifacts-destination", str(folder / "artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        ],
        cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"},
    )  # fmt: skip
    return server, url


def wait_healthy(server: subprocess.Popen, url: str, folder: Path, timeout: float = 150) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        if server.poll() is not None or time.monotonic() > deadline:
            log = (folder / "mlflow.log").read_text()[-2000:]
            raise AssertionError(f"mlflow server down: {log}")
        time.sleep(0.5)


def stop_mlflow(server: subprocess.Popen) -> None:
    if server.poll() is None:
        os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()


class Jobs:
    """``ray job submit`` with the cluster's token and the runtime_env recipe."""

    def __init__(self, env: dict[str, str], tracking_uri: str, api_server: str):
        self.env = env
        self.runtime_env = {
            "working_dir": str(REPO),
            "py_modules": [str(REPO / "platform" / "cdiflow")],
            "excludes": [".git", ".venv", "workspace", "**/__pycache__", "*.parquet", "*.db"],
            "env_vars": {
                "MLFLOW_TRACKING_URI": tracking_uri,
                "MLFLOW_DISABLE_TELEMETRY": "true",
                # the State API (Train's placement-group cleanup) of *this* cluster: other
                # Ray instances may run on the same machine
                "RAY_API_SERVER_ADDRESS": api_server,
                "RAY_DATA_DISABLE_PROGRESS_BARS": "1",
                "PYTHONUNBUFFERED": "1",
            },
        }

    def submit(self, job_id: str, *entrypoint: str, timeout: float = 420) -> str:
        result = subprocess.run(
            [
                str(BIN / "ray"), "job", "submit",
                "--submission-id", job_id,
                "--runtime-env-json", json.dumps(self.runtime_env),
                "--", "python", *entrypoint,
            ],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=timeout,
        )  # fmt: skip
        logs = result.stdout + result.stderr
        assert result.returncode == 0, f"{job_id} failed:\n{logs[-4000:]}"
        status = subprocess.run(
            [str(BIN / "ray"), "job", "status", job_id],
            cwd=REPO, env=self.env, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        text = status.stdout + status.stderr
        assert f"job '{job_id}' succeeded" in text.lower(), text
        return logs


def train_worker_nodes(env: dict[str, str]) -> set[str]:
    """Node ids of the Ray Train workers the cluster ran (dead ones stay listed)."""
    out = subprocess.run(
        [
            str(BIN / "ray"), "list", "actors", "--detail", "--format", "json", "--limit", "1000",
            "--filter", "class_name=RayTrainWorker",
        ],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return {actor["node_id"] for actor in json.loads(out.stdout)}


def test_generate_train_register_reconstruct_with_ray_job_submit(tmp_path):
    from cdiflow.formats.aps34idc_writer import write_synthetic_beamtime
    from cdiflow.physics.beamtime import SyntheticBeamtimeConfig

    started = time.monotonic()
    state = tmp_path / "ray-state"
    env = base_env(state)
    (tmp_path / "mlflow").mkdir()
    server, url = start_mlflow(tmp_path / "mlflow")
    sids: set[int] = set()
    pids: set[int] = {server.pid}
    try:
        up = subprocess.run(
            ["bash", str(LOCAL_SH), "start", "1"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        sids = cluster_sids(state)
        assert up.returncode == 0, up.stdout + up.stderr
        client = {**env, **exports(state)}
        assert client["RAY_AUTH_MODE"] == "token"
        wait_healthy(server, url, tmp_path / "mlflow")
        pids |= session_pids({os.getsid(server.pid)})
        jobs = Jobs(client, url, client["RAY_API_SERVER_ADDRESS"])

        # 1. generate
        data = tmp_path / "data"
        jobs.submit(
            "e2e-generate", "jobs/generate.py", "--out", str(data), "--num-patterns", "80",
            "--test-patterns", "8", "--shards", "2", "--no-progress",
        )  # fmt: skip
        manifest = json.loads((data / "manifest.json").read_text())
        assert manifest["counts"] == {"train": 76, "val": 4, "test": 8}

        # 2. train, one worker per node
        (tmp_path / "train.yaml").write_text(TRAIN_YAML)
        logs = jobs.submit(
            "e2e-train", "jobs/train.py", "--data", str(data),
            "--config", str(tmp_path / "train.yaml"), "--name", "e2e",
            "--workspace", str(tmp_path / "ws"), "--storage-path", str(tmp_path / "runs"),
        )  # fmt: skip
        assert len(train_worker_nodes(client)) == 2, "the 2 Train workers shared a node"
        assert (tmp_path / "runs" / "e2e").is_dir(), logs[-2000:]

        # 3. the server's registry: the trained run's weights are the champion
        from mlflow import MlflowClient

        registry = MlflowClient(url, registry_uri=url)
        runs = registry.search_runs([registry.get_experiment_by_name("e2e").experiment_id])
        assert len(runs) == 1 and runs[0].info.status == "FINISHED"
        assert "val_chi2" in runs[0].data.metrics
        champion = registry.get_model_version_by_alias("cdiflow-cnn", "champion")
        assert champion.run_id == runs[0].info.run_id
        assert [v.version for v in registry.search_model_versions("name='cdiflow-cnn'")] == [
            champion.version
        ]

        # 4. reconstruct a synthetic beamtime with the champion
        beamtime = tmp_path / "beamtime"
        config = SyntheticBeamtimeConfig(scans=2, frames=8)
        write_synthetic_beamtime(beamtime, config, np.random.default_rng(4))
        out = tmp_path / "recon"
        jobs.submit(
            "e2e-reconstruct", "jobs/reconstruct.py", str(beamtime), "--out", str(out),
            "--model", "models:/cdiflow-cnn@champion", "--schedule", "2*(15*HIO+10*ER)",
        )  # fmt: skip
        rows = list(csv.DictReader((out / "summary.csv").open()))
        assert len(rows) == 2 and all(r["status"] == "ok" for r in rows), rows
        assert (out / "report.html").is_file()
        from cdiflow.beamtime.results import read_scan_result

        _, attrs = read_scan_result(out / rows[0]["result"])
        assert attrs["model"]["version"] == champion.version
        assert "champion" in attrs["model"]["aliases"]
    finally:
        sids |= cluster_sids(state)
        pids |= session_pids(sids)
        stopped = subprocess.run(
            ["bash", str(LOCAL_SH), "stop"],
            cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
        )  # fmt: skip
        stop_mlflow(server)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    left = sorted(pid for pid in pids if alive(pid))
    assert not left, f"processes left behind: {left}"
    print(f"end-to-end: {time.monotonic() - started:.0f} s")
