"""Training on masked data and on generated data: the pieces below Ray (no Ray here).

- masked data give the model ``mask_channel`` (``for_data``), and their batches (as Ray
  Data's ``iter_torch_batches`` makes them: float32, a 0/1 ``mask``) train and score;
- ``cdiflow train --generate N`` streams the patterns of ``cdiflow generate
  --num-patterns N`` (epoch 0 = its train split, val = its val split), new ones every
  epoch, never a validation pattern.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdiflow.cli import build_parser, main
from cdiflow.formats.layout import VAL_PERIOD, DatasetConfig
from cdiflow.models import ModelConfig, build_model
from cdiflow.physics.generator import GeneratorConfig
from cdiflow.pipelines.train_config import TrainJobConfig, for_data
from cdiflow.pipelines.train_stream import (
    epoch_positions,
    generated_arrays,
    generated_fingerprint,
    generated_rows,
    indices_at,
)

REALISTIC = DatasetConfig(
    num_patterns=40, test_patterns=4, shards=1, chunk_size=16, generator=GeneratorConfig.realistic()
)


@pytest.fixture(scope="module")
def realistic_dir(tmp_path_factory):
    from cdiflow.formats.dataset_folder import write_dataset

    root = tmp_path_factory.mktemp("realistic")
    write_dataset(root, REALISTIC)
    return root


def test_masked_data_turn_the_mask_channel_on():
    job = TrainJobConfig()
    assert for_data(job, masked=False) is job
    masked = for_data(job, masked=True)
    assert masked.model.mask_channel and masked.model.replace(mask_channel=False) == job.model
    assert for_data(masked, masked=True) is masked
    assert TrainJobConfig.from_dict(masked.to_dict()) == masked  # what the workers rebuild


def test_epoch_zero_is_the_generated_train_split_and_val_is_its_val_split(realistic_dir):
    from cdiflow.pipelines.data import read_split_arrays

    on_disk = read_split_arrays(realistic_dir, "train")
    start, stop = epoch_positions(REALISTIC, 0, 0, 1)
    assert (start, stop) == (0, REALISTIC.count("train"))
    streamed = generated_rows({"id": np.arange(stop)}, REALISTIC, "train", start)
    assert set(streamed) == {"modulus", "amplitude", "phase", "mask"}
    assert streamed["mask"].dtype == np.uint8 and streamed["mask"].shape == (38, 64, 64)
    for name, values in streamed.items():
        np.testing.assert_array_equal(values.astype(np.float32), on_disk[name], err_msg=name)
    val = read_split_arrays(realistic_dir, "val")
    for name, values in generated_arrays(REALISTIC, "val").items():
        np.testing.assert_array_equal(values, val[name], err_msg=name)


def test_every_epoch_and_rank_gets_new_training_patterns_never_validation_ones():
    seen: set[int] = set()
    for epoch in range(3):
        for rank in range(2):
            start, stop = epoch_positions(REALISTIC, epoch, rank, 2)
            assert stop - start == REALISTIC.count("train") // 2
            indices = set(indices_at("train", np.arange(start, stop)).tolist())
            assert not indices & seen
            assert all(i % VAL_PERIOD != VAL_PERIOD - 1 for i in indices)
            seen |= indices
    assert indices_at("val", np.arange(2)).tolist() == [19, 39]
    with pytest.raises(ValueError, match="workers"):
        epoch_positions(REALISTIC, 0, 0, 39)


def test_generated_fingerprint_names_seed_generator_and_size():
    prints = {
        generated_fingerprint(REALISTIC),
        generated_fingerprint(REALISTIC.replace(seed=1)),
        generated_fingerprint(REALISTIC.replace(generator=GeneratorConfig())),
        generated_fingerprint(REALISTIC.replace(num_patterns=60)),
    }
    assert len(prints) == 4
    assert generated_fingerprint(REALISTIC.replace(chunk_size=8)) == generated_fingerprint(
        REALISTIC
    )


def _as_ray_batches(columns: dict[str, np.ndarray], size: int) -> list[dict[str, torch.Tensor]]:
    """What ``iter_torch_batches(dtypes=torch.float32)`` gives: float32 tensors, 0/1 mask."""
    rows = len(columns["modulus"])
    return [
        {k: torch.tensor(v[i : i + size], dtype=torch.float32) for k, v in columns.items()}
        for i in range(0, rows, size)
    ]


def test_masked_batches_train_a_mask_channel_model_and_score_finitely():
    from cdiflow.train import TrainConfig, evaluate, fit

    columns = generated_rows({"id": np.arange(16)}, REALISTIC, "train", 0)
    batches = _as_ray_batches(columns, 8)
    job = for_data(TrainJobConfig.from_dict({"model": {"base_width": 4, "depth": 2}}), True)
    model = build_model(job.model, seed=0)
    seen: list[torch.Tensor] = []
    forward = model.forward
    model.forward = lambda modulus, mask=None: seen.append(mask) or forward(modulus, mask)
    config = TrainConfig(epochs=1, batch_size=8, optimizer="adamw", lr=1e-3, schedule="constant")
    history = fit(model, config, lambda epoch: batches, len(batches))
    assert np.isfinite(history[0]["train_loss"])
    assert seen and all(m is not None and m.dtype == torch.bool for m in seen)
    metrics = evaluate(model, batches, "cpu")
    assert all(np.isfinite(v) for v in metrics.values()), metrics


def test_evaluate_passes_the_mask_to_a_mask_channel_model(realistic_dir):
    from cdiflow.pipelines.data import read_split_arrays
    from cdiflow.pipelines.evaluate import pattern_errors, predict

    arrays = read_split_arrays(realistic_dir, "test")
    model = build_model(ModelConfig(base_width=4, depth=2, mask_channel=True), seed=0).eval()
    with_mask = predict(model, arrays["modulus"], arrays["mask"])
    without = predict(model, arrays["modulus"])  # the model then assumes every pixel measured
    assert with_mask.shape == (4, 2, 32, 32) and not np.allclose(with_mask, without)
    errors = pattern_errors(model, arrays)
    assert all(np.isfinite(v).all() and v.shape == (4,) for v in errors.values())


def _train_args(*argv):
    return build_parser().parse_args(["train", *argv])


def test_train_generate_flags_make_the_stream_config(tmp_path):
    from cdiflow.commands.train import load_stream

    assert load_stream(_train_args("--data", str(tmp_path))) is None
    stream = load_stream(_train_args("--generate", "40"))
    assert stream == DatasetConfig(num_patterns=40)  # the paper's, as `cdiflow generate`
    realistic = load_stream(_train_args("--generate", "40", "--preset", "realistic"))
    assert realistic.generator == GeneratorConfig.realistic() and realistic.seed == 0
    yaml = tmp_path / "gen.yaml"
    yaml.write_text("seed: 7\nchunk_size: 8\n")
    custom = load_stream(_train_args("--generate", "60", "--generate-config", str(yaml)))
    assert (custom.seed, custom.chunk_size, custom.count("val")) == (7, 8, 3)


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--data", "DIR", "--preset", "realistic"], "go with --generate"),
        (["--generate", "10"], "num_patterns must be at least 20"),
        (["--generate", "40", "--preset", "noisy"], "invalid choice"),
        (["--generate", "40", "--data", "DIR"], "not allowed with"),
    ],
)
def test_bad_generate_flags_exit_2_before_anything_starts(capsys, tmp_path, argv, words):
    argv = [a.replace("DIR", str(tmp_path / "data")) for a in argv]
    workspace = tmp_path / "ws"
    try:
        code = main(["train", *argv, "--workspace", str(workspace)])
    except SystemExit as exc:  # argparse
        code = exc.code
    assert code == 2
    assert words in capsys.readouterr().err
    assert not workspace.exists()
