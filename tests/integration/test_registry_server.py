"""Registry against a real ``mlflow server`` (SQLite backend) on 127.0.0.1."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from cdiflow.errors import ModelNotFound

pytestmark = pytest.mark.integration


def _trained_weights(tmp_path, seed: int, name: str):
    from cdiflow.models import ModelConfig, build_model, save_weights

    config = ModelConfig(base_width=4, depth=2)
    model = build_model(config, seed=seed).eval()
    path = save_weights(tmp_path / name, model, config)
    return model, path


def test_log_register_alias_load_predict_identically(mlflow_server, tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from cdiflow.pipelines.tracking import (
        CHAMPION,
        MODEL_NAME,
        RunLogger,
        experiment_id,
        load_model,
        register_weights,
        tracking_uri,
    )

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    uri = tracking_uri(tmp_path / "unused-workspace")
    assert uri == mlflow_server and not (tmp_path / "unused-workspace").exists()
    exp = experiment_id(uri, "cdiflow-server-test")
    x = torch.from_numpy(np.random.default_rng(0).random((4, 64, 64), dtype=np.float32))

    decisions = []
    models = []
    for seed, score in ((1, 0.20), (2, 0.35), (3, 0.05)):  # good, worse, better
        model, path = _trained_weights(tmp_path, seed, f"w{seed}.pt")
        logger = RunLogger.start(uri, exp, f"server-{seed}", {"seed": seed}, {"train": seed})
        logger.log_epoch(0, {"val_chi2": score})
        decisions.append(register_weights(uri, logger.run_id, path, {"val_chi2": score}))
        logger.finish()
        models.append(model)

    first, worse, better = decisions
    assert first.promoted and not worse.promoted and better.promoted
    assert worse.champion_version == first.version  # the worse one was compared, not moved
    client = MlflowClient(uri, registry_uri=uri)
    assert str(client.get_registered_model(MODEL_NAME).aliases[CHAMPION]) == better.version
    tags = client.get_model_version(MODEL_NAME, worse.version).tags
    assert json.loads(tags["champion_decision"])["champion_score"] == 0.20

    loaded, config, provenance = load_model(f"models:/{MODEL_NAME}@{CHAMPION}", uri=uri)
    assert provenance["version"] == better.version and provenance["aliases"] == [CHAMPION]
    assert config.base_width == 4
    with torch.inference_mode():
        assert torch.equal(loaded(x), models[2](x))
    by_number, _, _ = load_model(f"models:/{MODEL_NAME}/{worse.version}", uri=uri)
    with torch.inference_mode():
        assert torch.equal(by_number(x), models[1](x))
    from_file, _, prov = load_model(tmp_path / "w1.pt")
    with torch.inference_mode():
        assert torch.equal(from_file(x), models[0](x))
    assert prov["path"].endswith("w1.pt")

    with pytest.raises(ModelNotFound, match=r"versions \[1, 2, 3\].*champion"):
        load_model(f"models:/{MODEL_NAME}@staging", uri=uri)
    with pytest.raises(ModelNotFound, match="cdiflow-cnn/42 not found"):
        load_model(f"models:/{MODEL_NAME}/42", uri=uri)
