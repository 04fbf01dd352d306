"""Shared test setup: quiet Ray and MLflow, and a path to the real measured data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

REPO_ROOT = Path(__file__).resolve().parents[1]
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
