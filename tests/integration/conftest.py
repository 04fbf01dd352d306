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


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory):
    """A real ``mlflow server`` on 127.0.0.1 with a SQLite store; yields its URL."""
    folder = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(folder / "server.log", "wb")
    process = subprocess.Popen(
        [
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
        ],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server did not start: {(folder / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        # the server runs uvicorn workers in its own session: stop that whole group
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
