"""TrainConfig validation and the learning-rate schedules."""

from __future__ import annotations

import pytest
import torch

from cdiflow.errors import ConfigError
from cdiflow.train import TrainConfig, build_optimizer, build_scheduler, lr_factor


@pytest.mark.parametrize(
    "bad",
    [
        {"lr": 0.0},
        {"lr": -0.01},
        {"epochs": 0},
        {"batch_size": 0},
        {"optimizer": "lbfgs"},
        {"schedule": "exp"},
        {"momentum": 1.0},
        {"nesterov": True},
        {"decay_factor": 0.0},
        {"decay_every": 0},
        {"warmup_epochs": 200.0},
        {"grad_clip": -1.0},
        {"weight_decay": -1e-4},
    ],
)
def test_rejects_impossible_values(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad)


def test_from_dict_builds_nested_loss_weights_and_refuses_unknown_keys():
    config = TrainConfig.from_dict({"lr": 0.1, "loss": {"physics": 2}})
    assert config.loss.physics == 2.0 and config.lr == 0.1
    with pytest.raises(ConfigError, match="learning_rate"):
        TrainConfig.from_dict({"learning_rate": 0.1})
    with pytest.raises(ConfigError):
        TrainConfig.from_dict({"loss": {"lambda3": 4}})


def test_paper_defaults():
    c = TrainConfig.paper()
    assert (c.optimizer, c.lr, c.schedule, c.decay_factor, c.decay_every, c.epochs) == (
        "sgd", 0.01, "step", 0.95, 10, 200,
    )  # fmt: skip
    assert (c.loss.amplitude, c.loss.phase, c.loss.physics) == (1, 1, 4)
    assert TrainConfig.recommended().optimizer == "adamw"


def test_step_schedule_is_x095_every_10_epochs():
    c = TrainConfig.paper()
    assert lr_factor(c, 0, 100) == 1.0
    assert lr_factor(c, 999, 100) == 1.0
    assert lr_factor(c, 1000, 100) == pytest.approx(0.95)
    assert lr_factor(c, 2500, 100) == pytest.approx(0.95**2)


def test_onecycle_rises_to_peak_then_anneals():
    c = TrainConfig(epochs=10, schedule="onecycle", warmup_epochs=2.0, final_lr_fraction=1e-3)
    assert lr_factor(c, 0, 10) == pytest.approx(1 / 25)
    assert lr_factor(c, 20, 10) == pytest.approx(1.0)
    assert lr_factor(c, 100, 10) == pytest.approx(1e-3)
    values = [lr_factor(c, s, 10) for s in range(101)]
    assert max(values) == pytest.approx(1.0)
    assert values.index(max(values)) == 20


def test_cosine_with_warmup_and_scheduler_steps_per_batch():
    c = TrainConfig(epochs=4, schedule="cosine", warmup_epochs=1.0, lr=0.1)
    model = torch.nn.Linear(2, 1)
    opt = build_optimizer(model, c)
    sched = build_scheduler(opt, c, steps_per_epoch=4)
    lrs = []
    for _ in range(16):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.025)  # 1/4 of the warm-up
    assert lrs[3] == pytest.approx(0.1)
    assert lrs[-1] < lrs[8] < lrs[4]
