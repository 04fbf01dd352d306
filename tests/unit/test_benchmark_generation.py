"""The generation benchmark runs end to end at tiny sizes (``--smoke``) and writes its JSON."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def test_generation_benchmark_smoke(tmp_path):
    output = tmp_path / "generation.json"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO / "platform"), *filter(None, [env.get("PYTHONPATH")])]
    )
    script = REPO / "benchmarks" / "generation.py"
    result = subprocess.run(
        [sys.executable, str(script), "--smoke", "--output", str(output)],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "(a) diffraction step" in result.stdout and "(b) end to end" in result.stdout
    results = json.loads(output.read_text())
    assert results["smoke"] is True and results["config"]["object_size"] == 8
    a, b = results["diffraction"], results["end_to_end"]
    assert a["max_relative_difference"] < 1e-5  # the two diffraction paths agree
    assert min(a["fast_ms"], a["literal_ms"], a["ratio"]) > 0
    assert min(b["fast_ms_per_pattern"], b["naive_ms_per_pattern"], b["ratio"]) > 0
    assert b["naive_ms_per_pattern"] / b["fast_ms_per_pattern"] == pytest.approx(b["ratio"])
    assert set(results["fast_stages_ms_per_pattern"]) == {
        "random draws",
        "particles + projection",
        "diffraction + targets",
    }
    assert len(results["environment"]["load_average"]) == 3
    assert results["script"] == "benchmarks/generation.py" and results["threads"] == 1
    assert results["date"] and "git_sha" in results and len(results["load_before"]) == 3
    assert not list(tmp_path.glob("*.tmp"))  # written atomically
