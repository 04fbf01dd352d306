"""Fixtures for the training/registry integration tests: tiny datasets, Ray, MLflow server."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S", "300")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def write_tiny_dataset(root: Path, counts: dict[str, int], seed: int = 0, per_shard: int = 32):
    """The dataset layout (manifest + split/shard-NNNNN.parquet) written with plain pyarrow."""
    import json

    import pyarrow as pa
    import pyarrow.parquet as pq

    from cdiflow.physics.generator import GeneratorConfig, generate_samples

    config = GeneratorConfig()
    start = 0
    for split, count in counts.items():
        folder = root / split
        folder.mkdir(parents=True, exist_ok=True)
        for shard, first in enumerate(range(start, start + count, per_shard)):
            indices = np.arange(first, min(first + per_shard, start + count))
            batch = generate_samples(config, seed, indices)
            table = pa.table(
                {
                    "index": pa.array(indices),
                    "modulus": pa.FixedShapeTensorArray.from_numpy_ndarray(batch.modulus),
                    "amplitude": pa.FixedShapeTensorArray.from_numpy_ndarray(batch.amplitude),
                    "phase": pa.FixedShapeTensorArray.from_numpy_ndarray(batch.phase),
                }
            )
            pq.write_table(table, folder / f"shard-{shard:05d}.parquet")
        start += count
    (root / "manifest.json").write_text(json.dumps({"seed": seed, "counts": counts}))
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny-data")
    return write_tiny_dataset(root, {"train": 96, "val": 32, "test": 16})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listens_on(process: subprocess.Popen, port: int) -> bool:
    """True when ``process`` (or a child of it) listens on ``port``: the answer at the port
    is our server, not another one that took the port (the machine is shared)."""
    import psutil

    try:
        root = psutil.Process(process.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.Error:
        return False
    for proc in tree:
        try:
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr.port == port:
                    return True
        except psutil.Error:
            continue
    return False


def _start_mlflow_server(folder: Path, log):
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "mlflow",
        "server",
        "--backend-store-uri",
        f"sqlite:///{folder / 'mlflow.db'}",
        "--artifacts-destination",
        str(folder / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
    ]
    process = subprocess.Popen(
        command, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    return process, port


def _stop(process: subprocess.Popen) -> None:
    # the server runs uvicorn workers in its own session: stop that whole group
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=20)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on 127.0.0.1 with a SQLite store; yields its URL."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    log = open(folder / "server.log", "wb")
    process = None
    try:
        for _attempt in range(3):  # a free port can be taken by someone else meanwhile
            process, port = _start_mlflow_server(folder, log)
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 150
            while process.poll() is None and time.monotonic() < deadline:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                        if reply.status == 200 and _listens_on(process, port):
                            break
                except OSError:
                    pass
                time.sleep(0.5)
            if process.poll() is None and _listens_on(process, port):
                break
            _stop(process)
        else:
            raise RuntimeError(
                f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}"
            )
        yield url
    finally:
        if process is not None:
            _stop(process)
        log.close()
