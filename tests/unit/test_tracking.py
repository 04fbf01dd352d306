"""Tracking and registry against a local SQLite store (no server, no Ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cdiflow.errors import ModelNotFound

mlflow = pytest.importorskip("mlflow")

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def store(tmp_path_factory, monkeypatch_module):
    from cdiflow.pipelines import tracking

    monkeypatch_module.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = tmp_path_factory.mktemp("ws")
    uri = tracking.tracking_uri(workspace)
    return uri, workspace, tracking.experiment_id(uri, workspace=workspace)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_import_does_no_work():
    code = (
        "import sys; import cdiflow.pipelines.tracking, cdiflow.pipelines.train; "
        "assert 'mlflow' not in sys.modules and 'ray' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


def test_embedded_store_lives_in_workspace_and_env_overrides(tmp_path, monkeypatch):
    from cdiflow.pipelines.tracking import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking_uri(tmp_path / "ws")
    assert uri == f"sqlite:///{(tmp_path / 'ws').resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri(tmp_path / "other") == "http://127.0.0.1:5999"
    assert not (tmp_path / "other").exists()


def test_run_logger_logs_config_seeds_sha_and_epochs(store):
    from mlflow import MlflowClient

    from cdiflow.pipelines.tracking import RunLogger

    uri, workspace, exp = store
    config = {"model": {"base_width": 8, "depth": 3}, "train": {"lr": 0.01, "epochs": 2}}
    logger = RunLogger.start(uri, exp, "unit-run", config, {"data": 7, "train": 3})
    for epoch in range(2):
        logger.log_epoch(epoch, {"loss": 1.0 / (epoch + 1), "val_chi2": 0.5, "bad": float("nan")})
    logger.finish()
    client = MlflowClient(uri, registry_uri=uri)
    run = client.get_run(logger.run_id)
    assert run.data.params["model.base_width"] == "8"
    assert run.data.params["train.lr"] == "0.01"
    assert run.data.params["seed.data"] == "7"
    assert "bad" not in run.data.metrics
    history = client.get_metric_history(logger.run_id, "loss")
    assert [m.step for m in history] == [0, 1]
    assert run.info.artifact_uri.startswith((workspace.resolve() / "mlartifacts").as_uri())
    assert run.data.tags.get("git_sha") == _checkout_sha()
    assert run.info.status == "FINISHED"


def _checkout_sha():
    """HEAD of the git checkout holding cdiflow, or None outside git (what should be logged)."""
    from pathlib import Path

    import cdiflow

    reply = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=Path(cdiflow.__file__).parent, capture_output=True
    )
    return reply.stdout.decode().strip() if reply.returncode == 0 else None


def _run_with_weights(uri, exp, tmp_path, payload: bytes, score: float):
    from cdiflow.pipelines.tracking import RunLogger, register_weights

    logger = RunLogger.start(uri, exp, "reg", {"x": 1}, {"train": 0})
    weights = tmp_path / f"w{score}.bin"
    weights.write_bytes(payload)
    decision = register_weights(uri, logger.run_id, weights, {"val_chi2": score, "loss": 0.3})
    logger.finish()
    return decision


def test_champion_moves_only_on_better_val_chi2(store, tmp_path):
    from mlflow import MlflowClient

    from cdiflow.pipelines.tracking import CHAMPION, MODEL_NAME

    uri, _, exp = store
    first = _run_with_weights(uri, exp, tmp_path, b"first", 0.20)
    assert first.promoted and first.champion_version is None
    worse = _run_with_weights(uri, exp, tmp_path, b"worse", 0.30)
    assert not worse.promoted
    assert worse.champion_version == first.version and worse.champion_score == 0.20
    better = _run_with_weights(uri, exp, tmp_path, b"better", 0.10)
    assert better.promoted and better.champion_version == first.version
    client = MlflowClient(uri, registry_uri=uri)
    assert str(client.get_registered_model(MODEL_NAME).aliases[CHAMPION]) == better.version
    version = client.get_model_version(MODEL_NAME, worse.version)
    assert float(version.tags["val_chi2"]) == 0.30
    recorded = json.loads(version.tags["champion_decision"])
    assert recorded["promoted"] is False and recorded["champion_score"] == 0.20


def test_missing_alias_or_version_lists_what_exists(store, tmp_path):
    from cdiflow.pipelines.tracking import resolve_version

    uri, _, exp = store
    _run_with_weights(uri, exp, tmp_path, b"any", 0.5)
    with pytest.raises(ModelNotFound, match=r"versions \[1, .*aliases .*champion"):
        resolve_version(uri, "models:/cdiflow-cnn@staging")
    with pytest.raises(ModelNotFound, match=r"cdiflow-cnn/999 not found: .*versions"):
        resolve_version(uri, "models:/cdiflow-cnn/999")
    with pytest.raises(ModelNotFound, match="registered models: \\['cdiflow-cnn'\\]"):
        resolve_version(uri, "models:/nonesuch@champion")
    with pytest.raises(ModelNotFound, match="cannot parse"):
        resolve_version(uri, "models:/cdiflow-cnn")


def test_missing_file_is_model_not_found(tmp_path):
    from cdiflow.pipelines.tracking import load_model

    with pytest.raises(ModelNotFound, match="no such weights file"):
        load_model(tmp_path / "nope.pt")
