"""Refinement settings by start kind."""

from __future__ import annotations

import pytest

from cdiflow.errors import InputError
from cdiflow.phasing.settings import PAPER_SETTINGS, SEEDED_SETTINGS, RefineSettings, settings_for


def test_guessed_starts_get_the_gentle_schedule_and_blind_starts_the_papers():
    for kind in ("cnn", "nns", "adapted-cnn"):
        assert settings_for(kind) is SEEDED_SETTINGS
    for kind in ("random-rectangle", "random-cnn-support"):
        assert settings_for(kind) is PAPER_SETTINGS
    assert PAPER_SETTINGS.iterations == 600
    assert SEEDED_SETTINGS.iterations == 99 + 60  # the winner's curve: head, then tail
    assert SEEDED_SETTINGS.work == 5 * 99 + 60 < PAPER_SETTINGS.work == 600
    assert SEEDED_SETTINGS.algorithms[-60:] == ("ER",) * 60
    assert SEEDED_SETTINGS.beta < PAPER_SETTINGS.beta
    assert SEEDED_SETTINGS.shrinkwrap.start < PAPER_SETTINGS.shrinkwrap.start


@pytest.mark.parametrize(
    "kwargs",
    [
        {"schedule": "5*(HIO"},
        {"beta": 0.0},
        {"beta": 1.5},
        {"schedule": "10*XX"},
        {"candidates": 0},
        {"tail": "3*(ER"},
    ],
)
def test_bad_settings_raise_an_input_error(kwargs):
    with pytest.raises(InputError):
        RefineSettings(**kwargs)
