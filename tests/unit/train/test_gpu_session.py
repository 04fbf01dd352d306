"""benchmarks/gpu_session.sh: the prepared device runbook runs its stages' smoke forms."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "benchmarks" / "gpu_session.sh"


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


def test_the_gpu_scripts_import_without_ray_mlflow_or_a_git_tree(tmp_path):
    """The GPU image has neither Ray nor MLflow, and its copy of the tree may lack .git:
    both scripts and their run record still import, and the SHA reads None."""
    code = (
        "import sys\n"
        "sys.modules['ray'] = sys.modules['mlflow'] = None  # import of either now fails\n"
        "import gpu_phasing, gpu_train, run_record\n"
        "print(run_record.run_record('gpu_train.py')['git_sha'])\n"
    )
    path = os.pathsep.join([str(ROOT / "benchmarks"), str(ROOT / "platform")])
    env = dict(os.environ, PYTHONPATH=path, GIT_DIR=str(tmp_path / "no-git"), OMP_NUM_THREADS="1")
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-1] == "None"
