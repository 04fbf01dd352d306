"""A SIGKILLed driver's local Ray processes are cleaned up by the next local start."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

from cdiflow.pipelines import ray_leftovers

DRIVER = r"""
import sys, time
from cdiflow.pipelines.cluster import connect
connect(num_cpus=1, object_store_memory=100 * 2**20)
print("ready", flush=True)
time.sleep(600)
"""


def _start_driver(env) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-c", DRIVER], env=env, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout.readline().strip() == "ready"
    return process


def test_leftovers_of_a_killed_driver_are_killed_and_nothing_else():
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "platform")
    driver = _start_driver(env)
    record = ray_leftovers.records_dir() / f"{driver.pid}.json"
    children = json.loads(record.read_text())["children"]
    names = {psutil.Process(c["pid"]).name() for c in children}
    assert any("raylet" in n for n in names) and any("gcs" in n for n in names), names
    ray_leftovers.clean()  # (may clean other users' runs that died before this test)
    assert all(ray_leftovers._alive(c) for c in children)  # its driver runs: not leftovers
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    time.sleep(1)
    alive = [c for c in children if ray_leftovers._alive(c) is not None]
    assert alive, "a SIGKILLed driver leaves its Ray processes running"
    assert ray_leftovers.clean() >= len(alive)
    assert all(ray_leftovers._alive(c) is None for c in children)
    assert not record.exists()
