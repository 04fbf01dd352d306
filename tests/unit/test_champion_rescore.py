"""The training driver registers with the val split's fingerprint and rescores a champion
that was scored on another val split (real SQLite registry, real tiny data sets, no Ray)."""

from __future__ import annotations

import json
import os
import shutil
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("mlflow")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _dataset(root, seed):
    """A complete data set (shards + manifest) in the project's format, without Ray."""
    from cdiflow.formats.dataset import Manifest, generate_shard, write_manifest
    from cdiflow.formats.layout import SPLITS, DatasetConfig

    config = DatasetConfig(seed=seed, num_patterns=40, test_patterns=1, shards=1, chunk_size=32)
    infos = {}
    for spec in config.shard_specs():
        (root / spec.split).mkdir(parents=True, exist_ok=True)
        infos[spec.relpath] = generate_shard(root, config, spec)
    shards = {
        split: tuple(infos[s.relpath] for s in config.shard_specs() if s.split == split)
        for split in SPLITS
    }
    write_manifest(root, Manifest(config.resolved(), shards, "test"))
    return root


@pytest.fixture(scope="module")
def datasets(tmp_path_factory):
    return _dataset(tmp_path_factory.mktemp("data-a"), 1), _dataset(
        tmp_path_factory.mktemp("data-b"), 2
    )


@pytest.fixture
def store(tmp_path, monkeypatch):
    from cdiflow.pipelines import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking.tracking_uri(tmp_path / "ws")
    return uri, tracking.experiment_id(uri, workspace=tmp_path / "ws")


def _checkpoint(folder, seed):
    """A checkpoint folder holding what the rank-0 worker saves: ``model.pt``."""
    from cdiflow.models import ModelConfig, build_model, save_weights
    from cdiflow.pipelines.train import WEIGHTS_FILE

    config = ModelConfig(base_width=2, depth=1)
    folder.mkdir(parents=True)
    save_weights(folder / WEIGHTS_FILE, build_model(config, seed=seed), config)
    return folder


def _direct_score(weights, data_dir):
    """The worker's recipe, by hand: recalibrated BN, then evaluate's modulus chi^2."""
    from cdiflow.models import load_weights
    from cdiflow.pipelines.data import read_split_arrays
    from cdiflow.train.loop import evaluate, recalibrate_batchnorm

    model, *_ = load_weights(weights)
    arrays = read_split_arrays(data_dir, "val")
    batches = [{k: torch.from_numpy(v) for k, v in arrays.items()}]
    recalibrate_batchnorm(model, batches, "cpu")
    return evaluate(model, batches, "cpu")["chi2_modulus"]


def test_fingerprint_names_the_val_bytes(datasets, tmp_path):
    from cdiflow.pipelines.train import eval_fingerprint

    a, b = datasets
    copy = shutil.copytree(a, tmp_path / "copy")
    assert eval_fingerprint(a) == eval_fingerprint(copy) == eval_fingerprint(a, "val")
    assert eval_fingerprint(a).startswith("sha256:") and len(eval_fingerprint(a)) == 71
    assert eval_fingerprint(a) != eval_fingerprint(b)
    assert eval_fingerprint(a, "train") != eval_fingerprint(a)


def test_driver_rescores_a_champion_from_another_val_split(datasets, store, tmp_path):
    from mlflow import MlflowClient

    from cdiflow.models import ModelConfig
    from cdiflow.pipelines.tracking import MODEL_NAME, RunLogger
    from cdiflow.pipelines.train import TrainJobConfig, champion_rescorer, eval_fingerprint
    from cdiflow.pipelines.train_result import finish_training

    a, b = datasets
    uri, exp = store
    job = TrainJobConfig(model=ModelConfig(base_width=2, depth=1))
    client = MlflowClient(uri, registry_uri=uri)

    def finish(data_dir, seed, score):
        run_id = RunLogger.start(uri, exp, f"run-{seed}", job.to_dict(), {"train": seed}).run_id
        folder = _checkpoint(tmp_path / f"ckpt-{seed}", seed)
        result = SimpleNamespace(
            checkpoint=SimpleNamespace(path=str(folder)), metrics={"val_chi2": score, "epoch": 0}
        )
        return finish_training(job, result, f"run-{seed}", tmp_path, uri, run_id, True, data_dir)

    first = finish(a, 1, 0.5).promotion
    assert first["promoted"] and first["eval_fingerprint"] == eval_fingerprint(a)
    tags = client.get_model_version(MODEL_NAME, first["version"]).tags
    assert tags["eval_fingerprint"] == eval_fingerprint(a)

    # the champion's weights, scored on b's val split by the driver and by hand
    on_b = champion_rescorer(uri, b)(first["version"])
    assert on_b == pytest.approx(_direct_score(tmp_path / "ckpt-1" / "model.pt", b), rel=1e-6)

    second = finish(b, 2, on_b / 2).promotion  # better than the champion on b
    assert second["champion_rescored"] and second["rescored_fingerprint"] == eval_fingerprint(b)
    assert second["champion_fingerprint"] == eval_fingerprint(a)
    assert second["champion_score"] == pytest.approx(on_b, rel=1e-6)
    assert second["champion_recorded_score"] == 0.5 and second["promoted"]
    recorded = json.loads(
        client.get_model_version(MODEL_NAME, second["version"]).tags["champion_decision"]
    )
    assert recorded["champion_rescored"] is True
    assert str(client.get_registered_model(MODEL_NAME).aliases["champion"]) == second["version"]


def test_driver_refuses_a_nan_score_and_marks_the_run_failed(datasets, store, tmp_path):
    from mlflow import MlflowClient

    from cdiflow.errors import NonFiniteScore
    from cdiflow.models import ModelConfig
    from cdiflow.pipelines.tracking import RunLogger
    from cdiflow.pipelines.train import TrainJobConfig
    from cdiflow.pipelines.train_result import finish_training

    uri, exp = store
    job = TrainJobConfig(model=ModelConfig(base_width=2, depth=1))
    run_id = RunLogger.start(uri, exp, "diverged", job.to_dict(), {"train": 0}).run_id
    folder = _checkpoint(tmp_path / "ckpt", 0)
    result = SimpleNamespace(
        checkpoint=SimpleNamespace(path=str(folder)),
        metrics={"val_chi2": float("nan"), "epoch": 0},
    )
    with pytest.raises(NonFiniteScore):
        finish_training(job, result, "diverged", tmp_path, uri, run_id, True, datasets[0])
    client = MlflowClient(uri, registry_uri=uri)
    assert client.get_run(run_id).info.status == "FAILED"
    assert client.search_registered_models() == []
