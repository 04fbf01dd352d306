"""benchmarks/gpu_session.sh: the prepared device runbook runs its stages' smoke forms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[3] / "benchmarks" / "gpu_session.sh"


def _run(stage: str, out: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OUT=str(out), OMP_NUM_THREADS="1")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return subprocess.run(
        ["bash", str(SCRIPT), stage], env=env, capture_output=True, text=True, timeout=300
    )


def test_smoke_stage_writes_weights_and_both_results(tmp_path):
    done = _run("smoke", tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    train = json.loads((tmp_path / "gpu_train.json").read_text())
    assert train["args"]["twin_invariant"] is True
    assert (tmp_path / "cnn_smoke.pt").stat().st_size > 0
    phasing = json.loads((tmp_path / "gpu_phasing.json").read_text())
    assert phasing["smoke"] is True


def test_an_unknown_stage_is_refused_with_usage(tmp_path):
    done = _run("everything", tmp_path)
    assert done.returncode == 2
    assert "usage: bash benchmarks/gpu_session.sh train|phasing|smoke" in done.stderr
