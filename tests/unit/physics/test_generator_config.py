"""GeneratorConfig validation: every impossible value is a ConfigError naming its field."""

from __future__ import annotations

import math

import pytest
import yaml

from cdiflow.errors import ConfigError, InputError
from cdiflow.physics.detector import DetectorConfig
from cdiflow.physics.generator import GeneratorConfig


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"object_size": 0}, "object_size"),
        ({"object_size": -4}, "object_size"),
        ({"pattern_size": 0}, "pattern_size"),
        ({"pattern_size": 48}, "pattern_size"),  # object box 32 does not fit
        ({"object_size": 64, "semi_axes": (2.0, 4.0)}, "pattern_size"),
        ({"semi_axes": (8.0, 4.0)}, "semi_axes"),
        ({"semi_axes": (0.0, 4.0)}, "semi_axes"),
        ({"semi_axes": (4.0, 12.0)}, "semi_axes"),  # too big for the object box
        ({"roundness": (2.0, 0.5)}, "roundness"),
        ({"roundness": (-1.0, 1.0)}, "roundness"),
        ({"correlation_length": (0.0, 3.0)}, "correlation_length"),
        ({"correlation_length": (5.0, 3.0)}, "correlation_length"),
        ({"phase_span": 0.0}, "phase_span"),
        ({"phase_span": 7.0}, "phase_span"),
        ({"edge_sigma": -0.1}, "edge_sigma"),
        ({"support_threshold": 1.0}, "support_threshold"),
        ({"support_threshold": 0.0}, "support_threshold"),
    ],
)
def test_invalid_values_raise_config_error_naming_the_field(changes, field):
    with pytest.raises(ConfigError, match=field) as info:
        GeneratorConfig(**changes)
    assert isinstance(info.value, InputError)  # the CLI turns it into exit code 2
    with pytest.raises(ConfigError, match=field):
        GeneratorConfig.from_dict(changes)


def test_defaults_are_the_paper_setup():
    config = GeneratorConfig()
    assert (config.object_size, config.pattern_size) == (32, 64)
    assert config.phase_span == pytest.approx(2 * math.pi)
    assert config.detector == DetectorConfig() and not config.detector.has_mask


def test_unknown_keys_are_refused():
    with pytest.raises(ConfigError, match="obect_size"):
        GeneratorConfig.from_dict({"obect_size": 32})
    with pytest.raises(ConfigError, match=r"detector.*photon"):
        GeneratorConfig.from_dict({"detector": {"photon": 10}})


def test_yaml_round_trip_and_errors(tmp_path):
    config = GeneratorConfig(semi_axes=(3.0, 6.0), detector=DetectorConfig(photons=1e5))
    good = tmp_path / "gen.yaml"
    good.write_text(yaml.safe_dump(config.to_dict()))
    assert GeneratorConfig.from_yaml(good) == config
    assert GeneratorConfig.from_yaml(good, {"detector.photons": 10.0}).detector.photons == 10.0

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("object_size: 32\nnum_particles: 5\n")
    with pytest.raises(ConfigError, match="num_particles") as info:
        GeneratorConfig.from_yaml(unknown)
    assert "unknown.yaml" in str(info.value)

    wrong_type = tmp_path / "type.yaml"
    wrong_type.write_text("object_size: big\n")
    with pytest.raises(ConfigError, match="object_size"):
        GeneratorConfig.from_yaml(wrong_type)

    invalid = tmp_path / "invalid.yaml"
    invalid.write_text("pattern_size: 40\n")
    with pytest.raises(ConfigError, match="pattern_size"):
        GeneratorConfig.from_yaml(invalid)

    short = tmp_path / "short.yaml"
    short.write_text("semi_axes: [4.0]\n")
    with pytest.raises(ConfigError, match="semi_axes"):
        GeneratorConfig.from_yaml(short)
