"""The header every benchmark JSON starts with: what ran, when, where, at what load.

    result = {**run_record("seeded_refinement.py", load_before), "summary": ...}

``load_before`` is the load average read before the measurement (default: now); the
benchmark adds ``load_after`` itself when it ends.
"""

from __future__ import annotations

import datetime
import os
import platform as stdlib_platform
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "platform"))

from cdiflow.pipelines.tracking_store import git_sha  # noqa: E402


def run_record(script: str, load_before: list[float] | None = None) -> dict:
    """``script`` (its name in benchmarks/), UTC date, git SHA, machine, torch, threads
    and the load average before the run."""
    return {
        "script": f"benchmarks/{script}",
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(ROOT),
        "machine": f"{os.cpu_count()} cores, {stdlib_platform.machine()}",
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "load_before": list(os.getloadavg()) if load_before is None else list(load_before),
    }
