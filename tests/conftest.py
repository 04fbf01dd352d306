"""Shared test setup: quiet Ray and MLflow, the benchmarks importable, the measured data."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO_ROOT = Path(__file__).resolve().parents[1]
# Benchmarks run as scripts, with their folder on sys.path (``run_record``); tests that
# load a benchmark as a module get the same.
sys.path.insert(0, str(REPO_ROOT / "benchmarks"))
SCAN54 = REPO_ROOT.parent / "shared" / "data" / "aps-34idc-scan54"


@pytest.fixture
def scan54() -> Path:
    """The real APS 34-ID-C scan 54 folder; skips when this checkout has no shared data."""
    if not (SCAN54 / "example.spec").is_file():
        pytest.skip(f"real data folder absent ({SCAN54.name} next to the project)")
    return SCAN54


@pytest.fixture(autouse=True)
def _restore_tracking_uri():
    """mlflow.set_tracking_uri (via tracking.configure) exports MLFLOW_TRACKING_URI into
    this process's environment; undo it so later tests and their subprocesses do not
    inherit a test's store."""
    before = os.environ.get("MLFLOW_TRACKING_URI")
    yield
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


S3_BUCKET = "cdiflow-test"


@pytest.fixture(scope="module")
def s3_bucket(tmp_path_factory):
    """A real S3 API for one test module: ``moto_server`` on 127.0.0.1 and an empty bucket.

    Sets ``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY`` (``testing``),
    ``AWS_DEFAULT_REGION`` and ``AWS_ENDPOINT_URL`` (which pyarrow's S3 filesystem honours)
    in this process, so subprocesses and local Ray workers inherit them; restores them and
    stops the server at teardown. Yields the bucket's URI, ``s3://cdiflow-test``. Skips
    when moto is not installed (it is in the ``dev`` extra).
    """
    import importlib.util
    import socket
    import subprocess
    import sys
    import time
    import urllib.error
    import urllib.request

    if importlib.util.find_spec("moto") is None or importlib.util.find_spec("flask") is None:
        pytest.skip("moto[server] is not installed (pip install -e '.[dev]')")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    folder = tmp_path_factory.mktemp("moto")
    log = open(folder / "moto.log", "wb")
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=folder)
    endpoint = f"http://127.0.0.1:{port}"
    env = {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",  # no probe of an instance-metadata service
    }
    saved = {key: os.environ.get(key) for key in env}
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(endpoint, timeout=2).close()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"moto_server did not answer: {(folder / 'moto.log').read_text()}"
                    ) from None
                time.sleep(0.2)
        os.environ.update(env)
        from pyarrow import fs

        s3 = fs.S3FileSystem(
            endpoint_override=f"127.0.0.1:{port}", scheme="http", allow_bucket_creation=True
        )
        s3.create_dir(S3_BUCKET)
        yield f"s3://{S3_BUCKET}"
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
