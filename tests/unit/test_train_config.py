"""The training job config and the resource check (no Ray)."""

from __future__ import annotations

import pytest

from cdiflow.errors import ConfigError
from cdiflow.models import ModelConfig
from cdiflow.pipelines.train import (
    ScalingSettings,
    TrainJobConfig,
    check_resources,
    steps_per_epoch,
)
from cdiflow.train import TrainConfig


def test_default_yaml_is_the_typed_defaults():
    from cdiflow.commands.train import default_config_path

    job = TrainJobConfig.from_yaml(str(default_config_path()))
    assert job == TrainJobConfig()
    assert job.model == ModelConfig() and job.train == TrainConfig()


def test_overrides_and_round_trip():
    job = TrainJobConfig.from_yaml(None, {"scaling.workers": 2, "train.epochs": 3})
    assert job.scaling.workers == 2 and job.train.epochs == 3
    assert TrainJobConfig.from_dict(job.to_dict()) == job


@pytest.mark.parametrize(
    "data, message",
    [
        ({"train": {"lr": 0.0}}, "lr must be > 0"),
        ({"scaling": {"workerz": 2}}, "unknown key"),
        ({"model": {"depth": 0}}, "depth must be >= 1"),
        ({"scaling": {"workers": 0}}, "workers must be >= 1"),
        ({"optimiser": {}}, "unknown key"),
    ],
)
def test_bad_configs_raise_config_error(data, message):
    with pytest.raises(ConfigError, match=message):
        TrainJobConfig.from_dict(data)


def test_resource_check():
    check_resources(ScalingSettings(workers=2, cpus_per_worker=0.5), {"CPU": 2.0})
    with pytest.raises(ConfigError, match="cluster has 2 CPU"):
        check_resources(ScalingSettings(workers=3, cpus_per_worker=0.5), {"CPU": 2.0})
    with pytest.raises(ConfigError, match="cluster has 2 CPU"):
        check_resources(ScalingSettings(workers=2, cpus_per_worker=1.5), {"CPU": 2.0})
    with pytest.raises(ConfigError, match="0 GPU"):
        check_resources(ScalingSettings(workers=1, use_gpu=True), {"CPU": 8.0})
    check_resources(ScalingSettings(workers=64, autoscaling=True), {"CPU": 2.0})


def test_steps_per_epoch_counts_each_workers_equal_share():
    assert steps_per_epoch(96, 1, 16) == 6
    assert steps_per_epoch(96, 2, 16) == 3
    assert steps_per_epoch(100, 3, 16) == 3  # 33 rows each -> 16 + 16 + 1
    assert steps_per_epoch(4, 8, 16) == 1


def test_a_yaml_exponent_without_a_sign_is_a_number(tmp_path):
    """PyYAML leaves 1.0e5 a string (it wants 1.0e+5); a config reads it as the number."""
    from cdiflow.errors import ConfigError
    from cdiflow.physics.generator import GeneratorConfig

    path = tmp_path / "g.yaml"
    path.write_text("variation:\n  photons: [1.0e4, 1e9]\n")
    assert GeneratorConfig.from_yaml(path).variation.photons == (1e4, 1e9)
    path.write_text("variation:\n  photons: [1.0e4, lots]\n")
    with pytest.raises(ConfigError, match="expected a number"):
        GeneratorConfig.from_yaml(path)
