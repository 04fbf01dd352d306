"""Refinement settings by start kind: the paper's for blind starts, a gentler one for guesses.

The paper refines every start with 600 iterations of ``5*(100*HIO+20*ER)`` at beta 0.9 and
shrink-wrap from iteration 100. From a CNN (or NNS) guess that schedule throws the lead
away: the first 100 HIO iterations at beta 0.9 scramble a start that is already close.
``benchmarks/cnn_schedule.py`` measured nine candidates on 100 held-out patterns from the
shipped model's starts (``benchmarks/results/cnn_schedule.json``). ``2*(40*HIO+20*ER)``
at beta 0.5 with shrink-wrap from iteration 20 ended, in 120 iterations, at a median
chi^2 below the random-rectangle start's after 600 iterations, and with a third less
aligned image error; it is the default for guessed starts.
"""

from __future__ import annotations

import dataclasses

from cdiflow.config import Config, require
from cdiflow.phasing.schedule import parse
from cdiflow.phasing.shrinkwrap import ShrinkWrap


@dataclasses.dataclass(frozen=True)
class RefineSettings(Config):
    """The schedule, HIO/RAAR feedback and shrink-wrap one refinement runs with."""

    schedule: str = "5*(100*HIO+20*ER)"
    beta: float = 0.9
    shrinkwrap: ShrinkWrap | None = ShrinkWrap()

    def validate(self) -> None:
        parse(self.schedule)  # ScheduleSyntaxError names the offending position
        require(0.0 < self.beta <= 1.0, f"beta must be in (0, 1], got {self.beta}")

    @property
    def iterations(self) -> int:
        return len(parse(self.schedule))


PAPER_SETTINGS = RefineSettings()
"""The paper's: 600 iterations, beta 0.9, shrink-wrap from iteration 100."""

SEEDED_SETTINGS = RefineSettings("2*(40*HIO+20*ER)", 0.5, ShrinkWrap(start=20))
"""For a start that is a guess of the object (CNN, NNS): 120 gentle iterations."""

GRADIENT_SETTINGS = RefineSettings(
    SEEDED_SETTINGS.schedule + "+100*ADAM", SEEDED_SETTINGS.beta, SEEDED_SETTINGS.shrinkwrap
)
"""A guess refined gently, then 100 gradient (Adam) steps through the forward model
(``cdiflow.phasing.gradient``): the ``cnn-gradient`` start of ``compare-init``."""

GUESS_KINDS = ("cnn", "nns", "adapted-cnn", "cnn-gradient")
"""Start kinds whose object is a guess of the answer rather than random phases."""


def settings_for(start_kind: str) -> RefineSettings:
    """The default settings for a start of ``start_kind`` (a name from ``phasing.starts``)."""
    if start_kind == "cnn-gradient":
        return GRADIENT_SETTINGS
    return SEEDED_SETTINGS if start_kind in GUESS_KINDS else PAPER_SETTINGS
