"""``cdiflow nns`` and ``cdiflow compare-init`` on a tiny Parquet data set."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cdiflow.cli import main


def _write_split(folder, batch, shard_size=16):
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder.mkdir(parents=True)
    for s, a in enumerate(range(0, len(batch.modulus), shard_size)):
        cols = {
            name: getattr(batch, name)[a : a + shard_size]
            for name in ("modulus", "amplitude", "phase")
        }
        table = pa.table(
            {
                k: pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(v))
                for k, v in cols.items()
            }
        )
        pq.write_table(table, folder / f"shard-{s:05d}.parquet")


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    from cdiflow.physics.generator import GeneratorConfig, generate_samples

    root = tmp_path_factory.mktemp("data")
    cfg = GeneratorConfig()
    _write_split(root / "train", generate_samples(cfg, 7, np.arange(40)))
    test = generate_samples(cfg, 7, np.arange(1000, 1004))
    _write_split(root / "test", test)
    rng = np.random.default_rng(0)  # a stand-in "CNN": the truth, slightly perturbed
    np.savez(
        root / "pred.npz",
        amplitude=np.clip(test.amplitude + 0.02 * rng.standard_normal(test.amplitude.shape), 0, 1),
        phase=np.where(test.phase > 0, test.phase + 0.01, 0),
    )
    return root


def test_nns_command(dataset, tmp_path, capsys):
    out = tmp_path / "nns"
    code = main(
        [
            "nns",
            "--data",
            str(dataset / "train"),
            "--test",
            str(dataset),
            "--count",
            "4",
            "--predictions",
            str(dataset / "pred.npz"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads((out / "nns.json").read_text())
    assert result["references"] == 40 and result["test_patterns"] == 4
    assert result["ms_per_query"] > 0
    cnn, nns = result["methods"]["CNN"], result["methods"]["NNS"]
    assert cnn["chi2_mean"] < nns["chi2_mean"]  # the near-truth stand-in beats a look-up
    assert (out / "nns_chi2.png").stat().st_size > 1000
    assert "ms per query" in capsys.readouterr().out


def test_compare_init_command(dataset, tmp_path):
    out = tmp_path / "cmp"
    code = main(
        [
            "compare-init",
            "--data",
            str(dataset / "test"),
            "--predictions",
            str(dataset / "pred.npz"),
            "--train",
            str(dataset),
            "--repeats",
            "2",
            "--index",
            "1",
            "--schedule",
            "2*(40*HIO+20*ER)",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    result = json.loads((out / "compare_init.json").read_text())
    names = [row["start"] for row in result["table"]]
    assert names == ["random-rectangle", "random-cnn-support", "cnn", "nns"]
    assert result["table"][0]["runs"] == 2 and result["table"][2]["runs"] == 1
    assert len(result["curves"]["cnn"]["mean"]) == 120
    cnn = result["table"][2]
    assert cnn["final_chi2_mean"] < 0.05 and cnn["phase_rms_mean"] < 1.0
    assert (out / "chi2_curves.png").stat().st_size > 1000
    assert (out / "evolution.png").stat().st_size > 1000


def test_compare_init_without_predictions_for_model_is_a_clear_error(dataset, tmp_path, capsys):
    code = main(
        [
            "compare-init",
            "--data",
            str(dataset / "test"),
            "--model",
            "champion",
            "--repeats",
            "1",
            "--out",
            str(tmp_path / "x"),
        ]
    )
    assert code == 2
    assert "--predictions" in capsys.readouterr().err
