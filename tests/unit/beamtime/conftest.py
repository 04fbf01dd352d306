"""Fixtures of the beamtime-job tests: a tiny CNN weights file and small beamtimes."""

from __future__ import annotations

import numpy as np
import pytest

from cdiflow.beamtime.steps import ReconstructConfig
from cdiflow.formats.aps34idc_writer import write_synthetic_beamtime
from cdiflow.phasing.shrinkwrap import ShrinkWrap
from cdiflow.physics.beamtime import SyntheticBeamtimeConfig
from cdiflow.testing import write_corrupt_beamtime

# A short schedule keeps the tests fast; the default (the paper's 600) is benchmarked.
FAST = ReconstructConfig(
    schedule="2*(15*HIO+10*ER)",
    shrinkwrap=ShrinkWrap(start=10, every=10),
    refine_batch=8,
    guess=None,  # every run on the short schedule (the CNN run's own: test_guess_and_adapt)
)


@pytest.fixture(scope="session")
def fast_config() -> ReconstructConfig:
    return FAST


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory):
    """A small untrained CNN saved with ``save_weights`` (seeded, so reproducible)."""

    from cdiflow.models import ModelConfig, build_model, save_weights

    config = ModelConfig(base_width=8)
    model = build_model(config, seed=0)
    path = tmp_path_factory.mktemp("model") / "cnn.pt"
    save_weights(path, model.eval(), config, {"val_chi2": 1.0})
    return path


@pytest.fixture(scope="session")
def tiny_model(weights_file):
    from cdiflow.models import load_weights

    model, _, _ = load_weights(weights_file)
    return model.eval()


@pytest.fixture(scope="session")
def good_beamtime(tmp_path_factory):
    root = tmp_path_factory.mktemp("good") / "beamtime"
    write_synthetic_beamtime(
        root, SyntheticBeamtimeConfig(scans=3, frames=6), np.random.default_rng(1)
    )
    return root


@pytest.fixture(scope="session")
def corrupt(tmp_path_factory):
    """(beamtime folder, [CorruptCase]) from ``cdiflow.testing.write_corrupt_beamtime``."""
    root = tmp_path_factory.mktemp("corrupt")
    return write_corrupt_beamtime(root, np.random.default_rng(5))
