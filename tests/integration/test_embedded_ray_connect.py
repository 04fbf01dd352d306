"""cdiflow.pipelines.cluster.connect with no address starts a small embedded Ray."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
CLIENT = """
import json, ray
from cdiflow.pipelines.cluster import connect, LOCAL_OBJECT_STORE_BYTES
info = connect(None)
again = connect(None)  # already connected: describes, starts nothing
print(json.dumps({
    "address": info.address, "nodes": info.num_nodes, "cpus": info.resources.get("CPU"),
    "store": info.resources.get("object_store_memory"), "cap": LOCAL_OBJECT_STORE_BYTES,
    "again_nodes": again.num_nodes,
}))
ray.shutdown()
"""


def test_connect_without_address_starts_small_local_ray(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    # Unit-test mode: no token, and nothing written to the real ~/.ray.
    env.update(RAY_AUTH_MODE="disabled", HOME=str(tmp_path), PYTHONPATH=str(REPO / "platform"))
    result = subprocess.run(
        [sys.executable, "-c", CLIENT],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["address"] == "local"
    assert info["nodes"] == 1 and info["again_nodes"] == 1
    assert info["cpus"] == 2.0
    assert info["store"] <= info["cap"]
