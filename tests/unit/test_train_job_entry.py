"""``jobs/train.py`` (the ``ray job submit`` entry) parses the same flags as ``cdiflow train``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_jobs_train_help_and_bad_config_exit_codes(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT / "platform")}
    job = [sys.executable, str(ROOT / "jobs" / "train.py")]
    shown = subprocess.run([*job, "--help"], env=env, capture_output=True, text=True)
    assert shown.returncode == 0 and "--resume" in shown.stdout and "--workers" in shown.stdout
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: 0}\n")
    failed = subprocess.run(
        [*job, "--data", str(tmp_path), "--config", str(bad)],
        env=env,
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 2
    assert failed.stderr.strip().splitlines()[-1].startswith("cdiflow train: error:")
