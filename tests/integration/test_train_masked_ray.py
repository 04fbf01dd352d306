"""Ray Train on masked data: a realistic data set on disk, and patterns generated on the fly.

One small local Ray (2 CPUs, 150 MiB object store, no dashboard) for the module; the CLI
runs in-process so it joins that Ray. Each run is one or two tiny epochs: the point is
that masks reach the model and the scores, not what the model learns.
"""

from __future__ import annotations

import json
import math

import pytest
import yaml

pytestmark = pytest.mark.integration

TINY = {"model": {"base_width": 4, "depth": 2}, "train": {"batch_size": 16, "epochs": 1}}


@pytest.fixture
def tiny_config(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(TINY))
    return path


def _outcome(capsys) -> dict:
    out = capsys.readouterr().out
    return json.loads(out[out.index("{\n") :])


def _assert_finite(metrics: dict) -> None:
    for key in ("train_loss", "val_loss", "val_chi2", "val_chi2_modulus"):
        assert math.isfinite(metrics[key]), (key, metrics)


def test_realistic_data_set_trains_a_mask_channel_model_and_evaluates(
    local_ray, tiny_config, tmp_path, capsys, monkeypatch
):
    from cdiflow.cli import main
    from cdiflow.formats.dataset import read_manifest
    from cdiflow.physics.generator import GeneratorConfig
    from cdiflow.pipelines.tracking import CHAMPION, MODEL_NAME, load_model, tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    data = tmp_path / "realistic"
    generate = ["generate", "--preset", "realistic", "--num-patterns", "80", "--shards", "2"]
    generate += ["--test-patterns", "8", "--out", str(data), "--no-progress"]
    assert main([*generate, "--workspace", str(tmp_path / "gen-ws")]) == 0  # joins this Ray
    assert read_manifest(data).generator == GeneratorConfig.realistic()
    capsys.readouterr()
    workspace = tmp_path / "ws"
    argv = ["train", "--data", str(data), "--config", str(tiny_config), "--name", "masked"]
    assert main([*argv, "--workspace", str(workspace)]) == 0
    outcome = _outcome(capsys)
    _assert_finite(outcome["metrics"])
    assert outcome["epochs_done"] == 1

    uri = tracking_uri(workspace)
    _model, model_config, provenance = load_model(f"models:/{MODEL_NAME}@{CHAMPION}", uri=uri)
    assert model_config.mask_channel and provenance["version"] == "1"

    out = tmp_path / "eval"
    ref = f"models:/{MODEL_NAME}@{CHAMPION}"
    evaluate = ["evaluate", "--model", ref, "--data", str(data), "--out", str(out), "--no-log"]
    assert main([*evaluate, "--workspace", str(workspace)]) == 0
    summary = json.loads((out / "evaluation.json").read_text())
    assert summary["masked"] and summary["patterns"] == 8
    assert summary["model_config"]["mask_channel"]
    assert all(math.isfinite(fit["sample_mean"]) for fit in summary["gamma_fits"].values())


def test_generated_on_the_fly_trains_two_ddp_workers_on_new_patterns_every_epoch(
    local_ray, tiny_config, tmp_path, capsys, monkeypatch
):
    from mlflow import MlflowClient

    from cdiflow.cli import main
    from cdiflow.pipelines.tracking import load_model

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = tmp_path / "ws"
    argv = ["train", "--generate", "40", "--preset", "realistic", "--epochs", "2", "--workers", "2"]
    argv += ["--config", str(tiny_config), "--name", "fly", "--workspace", str(workspace)]
    assert main(argv) == 0
    outcome = _outcome(capsys)
    assert outcome["epochs_done"] == 2
    _assert_finite(outcome["metrics"])
    # 95 % of 40 per epoch, 19 per worker, new ones each epoch (the DDP ranks' sum)
    assert outcome["metrics"]["train_patterns"] == 38
    assert not list(tmp_path.rglob("*.parquet"))  # nothing went to disk

    _model, model_config, _ = load_model(outcome["weights"])
    assert model_config.mask_channel
    assert outcome["promotion"]["version"] == "1"
    client = MlflowClient(outcome["tracking_uri"], registry_uri=outcome["tracking_uri"])
    run = client.get_run(outcome["run_id"])
    assert run.data.tags["data_dir"] == "generated"
    assert run.data.params["data.num_patterns"] == "40"
    assert run.data.params["model.mask_channel"] == "True"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_chi2")] == [0, 1]
