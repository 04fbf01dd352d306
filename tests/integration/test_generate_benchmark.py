"""The generation throughput and scaling benchmarks run end to end (tiny sizes) and write
their JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]


def _env() -> dict:
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(REPO / "platform"), env.get("PYTHONPATH")])
    )
    return env


def test_generate_throughput_smoke(tmp_path):
    env = _env()
    out = tmp_path / "results.json"
    command = [sys.executable, str(REPO / "benchmarks" / "generate_throughput.py"), "--smoke"]
    command += ["--json", str(out), "--scratch", str(tmp_path)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())
    ray_results = results["ray"]
    assert ray_results["workers_1"]["patterns"] == ray_results["workers_2"]["patterns"] == 100
    assert ray_results["speedup_2_over_1"] > 0
    assert ray_results["workers_2"]["cpu_ms_per_pattern"] > 0
    assert 5_000 < ray_results["large_run"]["bytes_per_pattern"] < 30_000
    assert ray_results["large_run"]["peak_pss_sum_mb"] > 0
    assert results["script"] == "benchmarks/generate_throughput.py"  # the run's record
    assert results["date"] and "git_sha" in results and len(results["load_before"]) == 3
    assert results["machine"]["cpus"] and len(results["machine"]["load_before"]) == 3
    assert [p.name for p in tmp_path.iterdir()] == ["results.json"]  # scratch data removed


def test_generate_scaling_tiny_run(tmp_path):
    """One 1-worker run of 40 patterns: the JSON starts with the run record."""
    out = tmp_path / "scaling.json"
    command = [sys.executable, str(REPO / "benchmarks" / "generate_scaling.py")]
    command += ["--patterns", "40", "--shards", "1", "--workers", "1", "--json", str(out)]
    done = subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(out.read_text())
    assert result["script"] == "benchmarks/generate_scaling.py"  # the run's record
    assert result["date"] and "git_sha" in result and len(result["load_before"]) == 3
    assert len(result["load_average_before"]) == 3 and result["cpu_count"]
    assert [r["workers"] for r in result["runs"]] == [1] and result["runs"][0]["speedup"] == 1
