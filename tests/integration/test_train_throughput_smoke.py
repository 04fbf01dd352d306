"""``benchmarks/train_throughput.py --smoke`` runs and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


def test_train_throughput_smoke(tmp_path):
    out = tmp_path / "t.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT / "platform")}
    subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "train_throughput.py"),
            "--smoke",
            "--out",
            str(out),
        ],
        check=True,
        env=env,
        timeout=400,
        capture_output=True,
    )
    result = json.loads(out.read_text())
    assert [r["workers"] for r in result["ray_train"]] == [1, 2]
    assert all(r["samples_per_s"] > 0 for r in result["ray_train"])
    assert result["pure_torch_samples_per_s"]["1_threads"] > 0
    assert result["ratio_2_workers_vs_1"] > 0
    assert result["script"] == "benchmarks/train_throughput.py"  # the run's record
    assert result["date"] and "git_sha" in result and len(result["load_before"]) == 3
