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

import pytest
from registry_data import write_tiny_dataset

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """128 train+val patterns (122 / 6) and 16 test patterns."""
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny-data"), 128, 16)


@pytest.fixture(scope="module")
def local_ray(no_ray_auth):
    """A local Ray (2 CPUs, 150 MiB object store, no dashboard) for one test module."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        object_store_memory=150 * 1024 * 1024,
        _node_ip_address="127.0.0.1",
    )
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def no_ray_auth():
    """Token auth off for the small throwaway Ray clusters of these tests (as unit tests do:
    it also keeps ~/.ray untouched). Set only while the fixture lives; the cluster tests
    that exercise the real deployment keep auth on."""
    previous = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    yield
    if previous is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = previous


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
        process.wait(timeout=5)
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
