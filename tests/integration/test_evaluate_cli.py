"""``cdiflow evaluate`` on a tiny test split: figures, JSON, and an MLflow run."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.integration


def test_evaluate_writes_figures_json_and_logs(tiny_dataset, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from cdiflow.cli import main
    from cdiflow.models import ModelConfig, build_model, save_weights
    from cdiflow.pipelines.tracking import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = ModelConfig(base_width=4, depth=2)
    weights = save_weights(tmp_path / "m.pt", build_model(config, seed=0).eval(), config)
    out = tmp_path / "eval"
    workspace = tmp_path / "ws"
    argv = ["evaluate", "--model", str(weights), "--data", str(tiny_dataset), "--out", str(out)]
    assert main([*argv, "--workspace", str(workspace)]) == 0

    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["patterns"] == 16
    for kind in ("modulus", "amplitude", "phase", "amplitude_twin_aware", "phase_twin_aware"):
        fit = summary["gamma_fits"][kind]
        assert fit["mean"] > 0 and len(summary["errors"][kind]) == 16
        assert fit["count"] == 16 and fit["median"] > 0
    # per pattern the closer of target and twin: never worse in amplitude + phase together
    errors = summary["errors"]
    for i in range(16):
        aware = errors["amplitude_twin_aware"][i] + errors["phase_twin_aware"][i]
        assert aware <= errors["amplitude"][i] + errors["phase"][i] + 1e-9
    for name in ("chi2_histograms.png", "samples.png"):
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    uri = tracking_uri(workspace)
    client = MlflowClient(uri, registry_uri=uri)
    run = client.get_run(summary["mlflow_run_id"])
    assert (
        run.data.metrics["test_modulus_chi2_gamma_mean"] == summary["gamma_fits"]["modulus"]["mean"]
    )
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "evaluation")}
    assert {"evaluation/chi2_histograms.png", "evaluation/samples.png"} <= logged

    # (a new workspace's champion is the shipped model, so ask for a version it lacks)
    missing = ["evaluate", "--model", "models:/cdiflow-cnn/7", "--data", str(tiny_dataset)]
    assert main([*missing, "--out", str(out), "--workspace", str(workspace)]) == 2
