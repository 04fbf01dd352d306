"""The shipped model: a file in the package, `--model pretrained`, and a new workspace's
champion (a real SQLite MLflow registry, no server, no Ray)."""

from __future__ import annotations

import json
import math

import pytest
import torch

from cdiflow import pretrained
from cdiflow.models import load_weights
from cdiflow.models.weights import read_weights
from cdiflow.physics.generator import GeneratorConfig, generate_samples

pytestmark = pytest.mark.skipif(not pretrained.available(), reason="no shipped weights")


@pytest.mark.parametrize("name", sorted(pretrained.SHIPPED))
def test_shipped_weights_are_small_safe_and_carry_their_score(name):
    weights = pretrained.SHIPPED[name]
    assert weights.stat().st_size < 8 * 2**20
    metadata = read_weights(weights)["metadata"]  # weights_only: no code
    assert math.isfinite(metadata["val_chi2"]) and 0 < metadata["val_chi2"] < 0.2
    assert metadata["eval_fingerprint"].startswith("generator:")
    card = json.loads(weights.with_suffix(".json").read_text())
    assert card["metadata"] == metadata and card["weights"] == weights.name
    assert set(card["test_by_preset"]) == {"paper", "realistic"}


def test_the_realistic_model_reads_the_mask_and_scores_better_on_realistic_data():
    from cdiflow.pipelines.evaluate import pattern_errors

    model, config, _ = load_weights(pretrained.REALISTIC_WEIGHTS)
    assert config.mask_channel
    shipped, _, _ = load_weights(pretrained.WEIGHTS)
    s = generate_samples(GeneratorConfig.realistic(), 12345, range(32))  # never seen
    data = {"modulus": s.modulus, "amplitude": s.amplitude, "phase": s.phase, "mask": s.mask}
    realistic = pattern_errors(model, data)["modulus"].mean()
    paper = pattern_errors(shipped, data)["modulus"].mean()
    assert float(realistic) < 0.5 * float(paper)


def test_shipped_model_beats_a_blank_guess_on_unseen_patterns():
    from cdiflow.pipelines.evaluate import pattern_errors

    model, _, _ = load_weights(pretrained.WEIGHTS)
    s = generate_samples(GeneratorConfig(), 12345, range(32))  # a seed it never saw
    errors = pattern_errors(
        model, {"modulus": s.modulus, "amplitude": s.amplitude, "phase": s.phase}
    )
    assert float(errors["modulus"].mean()) < 0.1
    assert float(errors["amplitude_twin_aware"].mean()) < 0.2


def test_model_flag_pretrained_names_the_shipped_file():
    from cdiflow.pipelines.tracking import model_reference

    assert model_reference("pretrained") == str(pretrained.WEIGHTS)
    assert model_reference("pretrained-realistic") == str(pretrained.REALISTIC_WEIGHTS)


def test_a_new_workspace_registers_the_shipped_model_as_champion(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    from cdiflow.pipelines import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.tracking_uri(tmp_path / "ws")
    model, _, provenance = tracking.load_model(tracking.DEFAULT_MODEL, uri)
    assert provenance["version"] == "1" and provenance["aliases"] == [tracking.CHAMPION]
    assert provenance["tags"][tracking.PRETRAINED_TAG] == "true"
    shipped, _, _ = load_weights(pretrained.WEIGHTS)
    for a, b in zip(model.state_dict().values(), shipped.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert tracking.ensure_pretrained(uri) is None  # once per registry
    client = MlflowClient(uri, registry_uri=uri)
    assert [str(v.version) for v in client.search_model_versions("name='cdiflow-cnn'")] == ["1"]


def test_a_trained_model_must_beat_the_shipped_one_on_its_own_data(tmp_path, monkeypatch):
    from cdiflow.models import ModelConfig, build_model, save_weights
    from cdiflow.pipelines import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = tmp_path / "ws"
    uri = tracking.tracking_uri(workspace)
    assert tracking.ensure_pretrained(uri) == "1"
    config = ModelConfig(base_width=2, depth=1)
    weights = save_weights(tmp_path / "w.pt", build_model(config, seed=0), config)
    experiment = tracking.experiment_id(uri, workspace=workspace)
    from mlflow import MlflowClient

    run = MlflowClient(uri, registry_uri=uri).create_run(experiment)
    scored = []

    def rescore(version: str) -> float:  # the shipped model on the candidate's set
        scored.append(version)
        return 0.03

    decision = tracking.register_weights(
        uri, run.info.run_id, weights, {"val_chi2": 0.5}, fingerprint="other", rescore=rescore
    )
    assert scored == ["1"] and decision.champion_rescored and not decision.promoted
    assert decision.champion_version == "1"
