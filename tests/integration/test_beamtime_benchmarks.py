"""The beamtime benchmarks run in their --smoke form (numbers are not asserted)."""

from __future__ import annotations

import json

import pytest

import beamtime_throughput
import scan54 as scan54_benchmark

pytestmark = pytest.mark.integration


def test_throughput_smoke(tmp_path):
    out = tmp_path / "throughput.json"
    assert beamtime_throughput.main(["--smoke", "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["ok"] == result["scans"] == 6
    assert result["scans_per_s"] > 0 and 0 < result["job_vs_raw"] < 10
    assert abs(sum(result["stage_fraction"].values()) - 1) < 1e-6
    assert result["script"] == "benchmarks/beamtime_throughput.py"  # the run's record
    assert len(result["load_before"]) == 3 and result["date"] and result["git_sha"]


def test_scan54_smoke(tmp_path, scan54):

    from cdiflow.models import ModelConfig, build_model, save_weights

    config = ModelConfig(base_width=8)
    weights = save_weights(tmp_path / "w.pt", build_model(config, seed=0).eval(), config)
    out = tmp_path / "scan54.json"
    images = tmp_path / "images"
    args = ["--smoke", "--data", str(scan54), "--model", str(weights), "--json", str(out)]
    assert scan54_benchmark.main([*args, "--images", str(images)]) == 0
    result = json.loads(out.read_text())
    assert set(result["refined"]) == {"random-rectangle", "random-cnn-support", "cnn", "cnn-jitter"}
    assert all(0 < r["mean"] < 0.05 for r in result["refined"].values())
    assert result["script"] == "benchmarks/scan54.py"  # the run's record
    assert result["date"] and "git_sha" in result and len(result["load_before"]) == 3
    for name in ("scan54_amplitude.png", "scan54_phase.png"):
        assert 0 < (images / name).stat().st_size < 200_000
