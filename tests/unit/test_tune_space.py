"""The sweep's typed search space: defaults, every distribution type, and one-line errors."""

from __future__ import annotations

import math
from importlib import resources

import pytest

from cdiflow.errors import ConfigError
from cdiflow.pipelines.train import TrainJobConfig
from cdiflow.pipelines.tune import concurrency, trial_demand
from cdiflow.pipelines.tune_space import (
    Distribution,
    SweepConfig,
    check_space,
    set_dotted,
    trial_config,
)

DEFAULT = resources.files("cdiflow") / "configs" / "tune.yaml"


def base() -> dict:
    return TrainJobConfig().to_dict()


def test_default_space_covers_the_issue_and_is_valid():
    sweep = SweepConfig.from_yaml(str(DEFAULT))
    keys = set(sweep.space)
    assert {"train.loss.amplitude", "train.loss.phase", "train.loss.physics"} <= keys
    assert {"train.lr", "train.schedule", "train.decay_factor", "train.warmup_epochs"} <= keys
    assert {"train.batch_size", "model.base_width"} <= keys
    assert set(sweep.space["train.schedule"].values) == {"step", "cosine", "onecycle"}
    check_space(sweep, base(), TrainJobConfig.from_dict)  # every corner builds


def test_to_dict_round_trips():
    sweep = SweepConfig.from_yaml(str(DEFAULT))
    again = SweepConfig.from_dict(sweep.to_dict())
    assert again == sweep


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"type": "gaussian", "low": 0.0, "high": 1.0}, "distribution type 'gaussian'"),
        ({"type": "uniform", "low": 1.0}, "takes ['high', 'low'], got ['low']"),
        ({"type": "uniform", "low": 2.0, "high": 1.0}, "needs low < high"),
        ({"type": "loguniform", "low": 0.0, "high": 1.0}, "loguniform needs low > 0"),
        ({"type": "int", "low": 1.5, "high": 4}, "int bounds must be integers"),
        ({"type": "choice", "values": []}, "at least one value"),
        ({"type": "choice", "values": [8, 8]}, "choice values repeat"),
        ({"type": "fixed", "values": [1]}, "takes ['value']"),
        ({"type": "uniform", "low": "small", "high": 1.0}, "expected a number"),
        ({"type": "uniform", "low": 0.1, "high": 1.0, "scale": 2}, "unknown key(s) ['scale']"),
        ("uniform(0, 1)", "expected a mapping"),
    ],
)
def test_invalid_distribution_is_one_line_config_error(spec, message):
    with pytest.raises(ConfigError) as err:
        SweepConfig.from_dict({"space": {"train.lr": spec}})
    text = str(err.value)
    assert message in text
    assert text.startswith("space.train.lr")
    assert "\n" not in text


@pytest.mark.parametrize(
    ("key", "spec", "message"),
    [
        ("train.lrr", {"type": "uniform", "low": 0.1, "high": 0.2}, "not a training-config field"),
        ("scaling.workers", {"type": "int", "low": 1, "high": 2}, "keys are dotted paths"),
        ("train.loss", {"type": "fixed", "value": 1.0}, "not a training-config field"),
        ("train.schedule", {"type": "choice", "values": ["step", "linear"]}, "'linear'"),
        ("train.warmup_epochs", {"type": "uniform", "low": 0.0, "high": 3.0}, "warmup_epochs"),
        ("model.base_width", {"type": "choice", "values": [0, 8]}, "base_width"),
    ],
)
def test_space_checked_against_the_training_config(key, spec, message):
    with pytest.raises(ConfigError) as err:
        sweep = SweepConfig.from_dict({"epochs": 2, "grace_period": 1, "space": {key: spec}})
        check_space(sweep, base(), TrainJobConfig.from_dict)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"trials": 0}, "trials must be >= 1"),
        ({"epochs": 4, "grace_period": 5}, "grace_period"),
        ({"reduction_factor": 1.0}, "reduction_factor"),
        ({"space": {}}, "space is empty"),
        ({"trial_cpus": 0.0}, "trial_cpus"),
        ({"space": {"train.epochs": {"type": "int", "low": 2, "high": 9}}}, "ASHA's max_t"),
    ],
)
def test_invalid_sweep_settings(settings, message):
    data = {"space": {"train.lr": {"type": "uniform", "low": 0.1, "high": 0.2}}, **settings}
    with pytest.raises(ConfigError, match=message):
        SweepConfig.from_dict(data)


def test_trial_config_applies_params_and_epochs_without_touching_the_base():
    data = base()
    trial = trial_config(data, 3, {"train.lr": 0.02, "train.loss.physics": 2.0})
    job = TrainJobConfig.from_dict(trial)
    assert job.train.lr == 0.02 and job.train.loss.physics == 2.0 and job.train.epochs == 3
    assert data["train"]["lr"] == TrainJobConfig().train.lr, "base must stay unchanged"
    with pytest.raises(ConfigError, match="not a section"):
        set_dotted(data, "train.lr.x", 1)


def test_fixed_values_leave_the_search_and_go_into_every_trial():
    sweep = SweepConfig.from_dict(
        {
            "space": {
                "train.lr": {"type": "loguniform", "low": 0.001, "high": 0.1},
                "model.base_width": {"type": "fixed", "value": 8},
            }
        }
    )
    assert list(sweep.tuned()) == ["train.lr"]
    assert sweep.fixed() == {"model.base_width": 8}


def test_distributions_become_tune_domains_with_the_same_bounds():
    pytest.importorskip("ray.tune")
    lr = Distribution(type="loguniform", low=1e-3, high=1e-1).to_tune()
    assert math.isclose(lr.lower, 1e-3) and math.isclose(lr.upper, 1e-1)
    width = Distribution(type="int", low=8, high=32).to_tune()
    assert (width.lower, width.upper) == (8, 33)  # Tune's randint excludes the upper end
    schedule = Distribution(type="choice", values=("step", "cosine")).to_tune()
    assert list(schedule.categories) == ["step", "cosine"]


def test_concurrency_leaves_room_for_train_and_data():
    sweep = SweepConfig.from_yaml(str(DEFAULT))
    scaling = TrainJobConfig().scaling  # 1 worker x 0.5 CPU
    assert trial_demand(sweep, scaling)["CPU"] == pytest.approx(1.75)
    assert concurrency(sweep, scaling, {"CPU": 2.0}) == 1  # the 2-core rule
    assert concurrency(sweep, scaling, {"CPU": 7.0}) == 4
    assert concurrency(sweep, scaling, {"CPU": 64.0}) == 8  # capped by trials
    gpu = scaling.replace(workers=4, use_gpu=True)
    assert concurrency(sweep, gpu, {"CPU": 64.0, "GPU": 8.0}) == 2
    assert concurrency(sweep.replace(max_concurrent_trials=3), scaling, {"CPU": 2.0}) == 3


def test_an_unset_grace_period_follows_the_epochs():
    space = {"train.lr": {"type": "uniform", "low": 0.1, "high": 0.2}}
    one = SweepConfig.from_dict({"trials": 2, "epochs": 1, "space": space})  # was refused
    assert one.grace_period == 0 and one.asha_grace_period == 1
    assert SweepConfig.from_dict({"epochs": 10, "space": space}).asha_grace_period == 2
    assert (
        SweepConfig.from_dict({"epochs": 10, "grace_period": 3, "space": space}).asha_grace_period
        == 3
    )
    packaged = resources.files("cdiflow") / "configs" / "tune.yaml"
    shipped = SweepConfig.from_yaml(str(packaged), {"epochs": 1})
    assert shipped.asha_grace_period == 1  # the packaged YAML sets no grace period either
    with pytest.raises(ConfigError, match="grace_period"):
        SweepConfig.from_dict({"epochs": 1, "grace_period": 2, "space": space})  # set: checked


def test_a_bound_written_as_a_yaml_exponent_string_is_a_number():
    # PyYAML reads 1e-3 as a string; the sweep reads it as the number it means
    sweep = SweepConfig.from_dict(
        {"space": {"train.lr": {"type": "loguniform", "low": "1e-4", "high": "1e-2"}}}
    )
    assert sweep.to_dict()["space"]["train.lr"]["low"] == 1e-4
