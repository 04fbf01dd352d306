"""The pure-PyTorch loop: a step learns, evaluate reports, resume continues identically."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from cdiflow.models import ModelConfig, build_model
from cdiflow.physics.generator import GeneratorConfig
from cdiflow.train import (
    TrainConfig,
    build_optimizer,
    evaluate,
    fit,
    load_checkpoint,
    per_pattern_metrics,
    save_checkpoint,
    train_one_epoch,
)
from cdiflow.train.data import generate_tensors, ordered_batches, shuffled_batches


@pytest.fixture(scope="module")
def data():
    return generate_tensors(GeneratorConfig(), 11, range(24))


def _model():
    torch.manual_seed(0)
    return build_model(ModelConfig(base_width=4, depth=2))


def test_training_steps_reduce_the_loss_on_a_fixed_batch(data):
    model = _model()
    config = TrainConfig(optimizer="adamw", lr=3e-3, schedule="constant")
    opt = build_optimizer(model, config)
    batch = next(ordered_batches(data, 8))
    before = evaluate(model.train(), [batch], "cpu")["loss"]  # evaluate sets eval mode
    stats = train_one_epoch(model, [batch] * 8, opt, None, config.loss, "cpu")
    after = train_one_epoch(model, [batch], opt, None, config.loss, "cpu")["loss"]
    assert after < stats["loss"] or after < before
    assert after < 0.95 * train_one_epoch(_model(), [batch], build_optimizer(_model(), config),
                                          None, config.loss, "cpu")["loss"]  # fmt: skip
    assert stats["patterns"] == 64 and stats["lr"] == 3e-3


def test_evaluate_reports_every_term_and_chi2(data):
    model = _model()
    result = evaluate(model, ordered_batches(data, 10), "cpu")
    assert set(result) == {
        "loss", "loss_amplitude", "loss_phase", "loss_physics",
        "chi2_modulus", "chi2_amplitude", "chi2_phase", "chi2_amplitude_twin_aware",
        "chi2_phase_twin_aware", "patterns",
    }  # fmt: skip
    assert result["patterns"] == 24
    assert 0 < result["chi2_modulus"] <= 1  # scale fitted: never worse than predicting 0
    assert result["chi2_phase_twin_aware"] <= result["chi2_phase"]
    per = per_pattern_metrics(model, ordered_batches(data, 10), "cpu")
    assert per["chi2_phase"].shape == (24,)
    assert per["chi2_modulus"].mean().item() == pytest.approx(result["chi2_modulus"], rel=1e-5)


def _run(config, data, resume=None, stop_after=None, saved=None):
    model = _model()

    def hook(end):
        if saved is not None:
            save_checkpoint(saved, end.state())
        return stop_after is not None and end.epoch + 1 >= stop_after

    history = fit(
        model, config, lambda epoch: shuffled_batches(data, 8, config.seed, epoch), 3,
        val_batches=lambda: ordered_batches(data, 12), resume=resume, on_epoch_end=hook,
    )  # fmt: skip
    return model, history


def test_resume_from_checkpoint_continues_identically(data, tmp_path):
    config = TrainConfig(epochs=3, optimizer="sgd", lr=0.01, momentum=0.9, schedule="cosine")
    straight, history = _run(config, data)
    assert [h["epoch"] for h in history] == [0, 1, 2]
    ckpt = tmp_path / "ckpt.pt"
    _, first = _run(config, data, stop_after=1, saved=ckpt)
    assert len(first) == 1
    resumed, rest = _run(config, data, resume=str(ckpt))
    assert [h["epoch"] for h in rest] == [1, 2]
    for a, b in zip(straight.state_dict().values(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert rest[-1]["val_chi2_modulus"] == history[-1]["val_chi2_modulus"]
    assert rest[-1]["train_lr"] == history[-1]["train_lr"]


def test_checkpoint_is_loaded_weights_only(tmp_path):
    model = _model()
    bad = tmp_path / "bad.pt"
    torch.save({"format": "cdiflow-train-checkpoint", "f": print}, bad)
    from cdiflow.train import CheckpointError

    with pytest.raises(CheckpointError):
        load_checkpoint(bad, model)


def test_shuffled_batches_depend_on_seed_and_epoch_only(data):
    a = [b["modulus"] for b in shuffled_batches(data, 8, 1, 0)]
    b = [b["modulus"] for b in shuffled_batches(data, 8, 1, 0)]
    c = [b["modulus"] for b in shuffled_batches(data, 8, 1, 1)]
    assert len(a) == 3 and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))


def test_no_ray_or_mlflow_in_models_losses_train():
    code = (
        "import sys, cdiflow.models, cdiflow.losses, cdiflow.train, cdiflow.train.data; "
        "bad = [m for m in ('ray', 'mlflow', 'matplotlib') if m in sys.modules]; "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_recalibrate_batchnorm_replaces_stale_statistics(data):
    from torch import nn

    from cdiflow.train import recalibrate_batchnorm

    model = _model()
    batches = list(ordered_batches(data, 8))
    reference = _model()
    recalibrate_batchnorm(reference, batches, "cpu")
    for m in model.modules():  # stale statistics, far from the data's
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.fill_(50.0)
            m.running_var.fill_(1e-4)
    recalibrate_batchnorm(model, batches, "cpu")
    assert model.training  # mode restored
    for a, b in zip(model.modules(), reference.modules(), strict=True):
        if isinstance(a, nn.BatchNorm2d):
            torch.testing.assert_close(a.running_var, b.running_var)
            assert a.momentum == 0.1
