"""Shared fixtures of the physics tests: seeded generators and random particles."""

from __future__ import annotations

import numpy as np
import pytest

from cdiflow.physics.generator import GeneratorConfig


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20211221)


@pytest.fixture
def config() -> GeneratorConfig:
    return GeneratorConfig()
