"""``cdiflow generate`` / ``evaluate`` / ``nns`` on an ``s3://`` data set, against a real S3 API.

``s3_bucket`` (tests/conftest.py) runs ``moto_server`` on 127.0.0.1 and exports the
``AWS_*`` variables, so the CLI subprocess, its local Ray and its workers all reach it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cdiflow.formats.dataset import list_shards, read_manifest, validate_split
from cdiflow.formats.dataset_folder import write_dataset
from cdiflow.formats.layout import SPLITS
from cdiflow.formats.location import Location
from cdiflow.testing import objects_under

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _local_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def generated(s3_bucket, tmp_path_factory) -> tuple[str, str]:
    """``cdiflow generate --num-patterns 64 --shards 2 --out s3://.../data2/`` (its own
    local Ray, 2 CPUs); returns (URI, stdout)."""
    uri = f"{s3_bucket}/data2"
    workspace = tmp_path_factory.mktemp("workspace")
    path = os.pathsep.join(filter(None, [str(REPO / "platform"), os.environ.get("PYTHONPATH")]))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_ENV, PYTHONPATH=path)
    command = [sys.executable, "-m", "cdiflow.cli", "generate", "--num-patterns", "64"]
    command += ["--shards", "2", "--test-patterns", "8", "--out", f"{uri}/", "--no-progress"]
    command += ["--workspace", str(workspace)]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return uri, done.stdout


def test_generate_writes_an_s3_dataset_with_the_bytes_of_a_local_one(generated, tmp_path):
    uri, stdout = generated
    assert f"data set: {uri} (72 patterns" in stdout
    assert f"manifest: {uri}/manifest.json" in stdout
    manifest = read_manifest(uri)
    assert manifest.count("train") + manifest.count("val") == 64 and manifest.count("test") == 8
    for split in SPLITS:
        assert validate_split(uri, split).count(split) == manifest.count(split)
    assert [Location.parse(p).name for p in list_shards(uri, "train")] == [
        "shard-00000.parquet",
        "shard-00001.parquet",
    ]
    local = tmp_path / "local"
    write_dataset(local, manifest.dataset)  # in this process, no Ray
    remote, expected = objects_under(uri), _local_files(local)
    assert sorted(remote) == sorted(expected)  # no lock, temp or stray object
    for name, data in expected.items():
        assert remote[name] == data, name


def test_ray_data_reads_the_s3_shards(generated):
    import ray

    from cdiflow.pipelines.data import read_parquet_dataset, read_split_arrays

    uri, _ = generated
    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    ray.init(num_cpus=1, object_store_memory=150 * 1024**2, include_dashboard=False)
    try:
        columns = ["modulus", "amplitude", "phase"]
        shards = list_shards(uri, "train")
        dataset = read_parquet_dataset(shards).select_columns(["index", *columns])
        rows = read_manifest(uri).count("train")
        batch = dataset.take_batch(batch_size=rows, batch_format="numpy")
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    expected = read_split_arrays(uri, "train")  # shard order = index order
    order = np.argsort(batch["index"])  # Ray reads the files in parallel, in any order
    for name in columns:
        np.testing.assert_array_equal(batch[name][order], expected[name], err_msg=name)


def test_evaluate_and_nns_read_an_s3_dataset(generated, tmp_path, monkeypatch):
    from cdiflow.cli import main
    from cdiflow.models import ModelConfig, build_model, save_weights

    uri, _ = generated
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    config = ModelConfig(base_width=4, depth=2)
    weights = save_weights(tmp_path / "m.pt", build_model(config, seed=0).eval(), config)
    local = tmp_path / "copy"  # the same data set, downloaded
    for name, data in objects_under(uri).items():
        (local / name).parent.mkdir(parents=True, exist_ok=True)
        (local / name).write_bytes(data)

    summaries = {}
    for label, data in (("s3", uri), ("local", str(local))):
        out = tmp_path / f"eval-{label}"
        argv = ["evaluate", "--model", str(weights), "--data", data, "--out", str(out)]
        assert main([*argv, "--workspace", str(tmp_path / "ws"), "--no-log"]) == 0
        summaries[label] = json.loads((out / "evaluation.json").read_text())
    assert summaries["s3"]["data"] == uri and summaries["s3"]["patterns"] == 8
    assert summaries["s3"]["errors"] == summaries["local"]["errors"]

    out = tmp_path / "nns"
    argv = ["nns", "--data", uri, "--test", f"{uri}/test", "--count", "8", "--out", str(out)]
    assert main([*argv, "--workspace", str(tmp_path / "ws")]) == 0
    result = json.loads((out / "nns.json").read_text())
    assert result["references"] == read_manifest(uri).count("train")
    assert result["test_patterns"] == 8
