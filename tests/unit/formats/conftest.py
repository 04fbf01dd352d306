"""Fixtures of the formats tests: small synthetic beamtimes written once per session."""

from __future__ import annotations

import numpy as np
import pytest

from cdiflow.formats.aps34idc_writer import write_synthetic_beamtime
from cdiflow.physics.beamtime import SyntheticBeamtimeConfig
from cdiflow.physics.generator import GeneratorConfig
from cdiflow.testing import write_corrupt_beamtime

# Weak phase: the diffraction maximum sits at k = 0, so the Bragg peak pixel and the
# central frame of the rocking scan are known exactly.
WEAK_PHASE = SyntheticBeamtimeConfig(
    scans=2, frames=8, generator=GeneratorConfig(phase_span=0.3), roi_offset=(128, 64)
)


@pytest.fixture(scope="session")
def weak_config():
    return WEAK_PHASE


@pytest.fixture(scope="session")
def weak_beamtime(tmp_path_factory):
    root = tmp_path_factory.mktemp("weak_beamtime")
    truth = write_synthetic_beamtime(root, WEAK_PHASE, np.random.default_rng(11))
    return root, truth


@pytest.fixture(scope="session")
def corrupt_cases(tmp_path_factory):
    root = tmp_path_factory.mktemp("corrupt")
    return write_corrupt_beamtime(root, np.random.default_rng(5))
