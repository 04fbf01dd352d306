"""Training on a real local Ray: fault tolerance (killed worker) and `cdiflow train` end to end.

One small local Ray (2 CPUs, 150 MiB object store, no dashboard) for the module; the CLI
test runs `cdiflow train` in-process so it joins that Ray instead of starting another.
"""

from __future__ import annotations

import os
import threading
import time

import pytest

pytestmark = pytest.mark.integration

TINY = {"model": {"base_width": 4, "depth": 2}, "train": {"batch_size": 16}}


def _train_workers() -> list:
    """Ray Train worker processes started by this test process (never anyone else's)."""
    import psutil

    mine = psutil.Process(os.getpid()).children(recursive=True)
    found = []
    for process in mine:
        try:
            if "RayTrainWorker" in " ".join(process.cmdline()):
                found.append(process)
        except psutil.Error:
            continue
    return found


def test_killed_worker_resumes_from_latest_checkpoint(local_ray, tiny_dataset, tmp_path):
    from mlflow import MlflowClient

    from cdiflow.pipelines.train import TrainJobConfig, run_training

    epochs = 3
    job = TrainJobConfig.from_dict(
        {
            **TINY,
            "train": {**TINY["train"], "epochs": epochs},
            "scaling": {"workers": 2, "cpus_per_worker": 0.5},
            "run": {"max_failures": 2, "checkpoints_to_keep": 10},
        }
    )
    outcome: dict = {}

    def train():
        try:
            outcome["result"] = run_training(job, tiny_dataset, tmp_path / "ws", name="killed")
        except BaseException as exc:  # re-raised in the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=train)
    thread.start()
    run_dir = tmp_path / "ws" / "runs" / "killed"
    deadline = time.monotonic() + 240
    while not (run_dir / "epoch-00000").exists():  # epoch 0 is checkpointed ...
        assert time.monotonic() < deadline and thread.is_alive(), outcome
        time.sleep(0.2)
    workers = _train_workers()
    assert len(workers) == 2, workers
    workers[-1].kill()  # ... and epoch 1 is running: kill one worker mid-epoch
    killed_pid = workers[-1].pid
    thread.join(timeout=400)
    assert not thread.is_alive()
    if "error" in outcome:
        raise outcome["error"]
    result = outcome["result"]
    assert result.epochs_done == epochs
    assert killed_pid not in {p.pid for p in _train_workers()}

    # every epoch was completed and logged; the restart lost at most the epoch in flight
    history = MlflowClient(
        result.tracking_uri, registry_uri=result.tracking_uri
    ).get_metric_history(result.run_id, "epoch")
    steps = [m.step for m in sorted(history, key=lambda m: m.timestamp)]
    assert sorted(set(steps)) == list(range(epochs))
    assert len(steps) <= epochs + 1
    assert all(b >= a for a, b in zip(steps, steps[1:], strict=False)) or len(steps) == epochs + 1
    checkpoints = sorted(p.name for p in run_dir.glob("epoch-*"))
    assert checkpoints == [f"epoch-{e:05d}" for e in range(epochs)]


def test_cli_train_end_to_end_registers_a_model(local_ray, tiny_dataset, tmp_path, monkeypatch):
    import yaml
    from mlflow import MlflowClient

    from cdiflow.cli import main
    from cdiflow.pipelines.tracking import CHAMPION, MODEL_NAME, load_model, tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({**TINY, "train": {**TINY["train"], "epochs": 1}}))
    workspace = tmp_path / "ws"
    argv = ["train", "--data", str(tiny_dataset), "--config", str(config)]
    argv += ["--workspace", str(workspace), "--name", "e2e"]
    assert main(argv) == 0
    assert local_ray.is_initialized()  # the CLI joined this Ray and left it running

    uri = tracking_uri(workspace)
    client = MlflowClient(uri, registry_uri=uri)
    assert str(client.get_registered_model(MODEL_NAME).aliases[CHAMPION]) == "1"
    model, model_config, provenance = load_model(f"models:/{MODEL_NAME}@{CHAMPION}", uri=uri)
    assert model_config.base_width == 4 and provenance["version"] == "1"
    run = client.get_run(provenance["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.params["train.epochs"] == "1"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_chi2")] == [0]
    assert "champion_decision.json" in {a.path for a in client.list_artifacts(run.info.run_id)}
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures")}
    assert "figures/training_curves.png" in figures

    # --resume with more epochs continues the same run from its last checkpoint
    assert main([*argv, "--resume", "--epochs", "2"]) == 0
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_chi2")]
    assert steps == [0, 1]
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    assert len(versions) == 2

    # a run name that exists is not silently reused
    assert main(argv) == 2


def test_bad_config_and_bad_dataset_exit_2_before_training(tiny_dataset, tmp_path, capsys):
    import numpy as np
    from registry_data import write_tiny_dataset

    from cdiflow.cli import main

    bad = tmp_path / "bad.yaml"
    bad.write_text("train: {lr: -0.1}\n")
    assert main(["train", "--data", str(tiny_dataset), "--config", str(bad)]) == 2
    assert "lr must be > 0" in capsys.readouterr().err
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("scaling: {workerz: 2}\n")
    assert main(["train", "--data", str(tiny_dataset), "--config", str(unknown)]) == 2
    assert "unknown key(s) ['workerz']" in capsys.readouterr().err

    def nan_in_val(split, chunks):
        for chunk in chunks:
            if split == "val":
                chunk.phase[3, 5, 5] = np.nan
            yield chunk

    broken = write_tiny_dataset(tmp_path / "broken", 128, 4, fault=nan_in_val)
    victim = sorted((broken / "val").glob("*.parquet"))[0]
    assert main(["train", "--data", str(broken), "--workspace", str(tmp_path / "w")]) == 2
    err = capsys.readouterr().err
    assert str(victim) in err and "'phase'" in err and "NaN" in err
    assert not (tmp_path / "w").exists()  # nothing was started or written


def test_more_workers_than_cpus_is_a_config_error(local_ray, tiny_dataset, tmp_path, capsys):
    from cdiflow.cli import main

    argv = ["train", "--data", str(tiny_dataset), "--workers", "3"]
    assert main([*argv, "--workspace", str(tmp_path / "ws")]) == 2
    assert "the cluster has 2 CPU(s)" in capsys.readouterr().err
