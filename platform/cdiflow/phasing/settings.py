"""Refinement settings by start kind: the paper's for blind starts, a gentler one for guesses.

The paper refines every start with 600 iterations of ``5*(100*HIO+20*ER)`` at beta 0.9 and
shrink-wrap from iteration 100. From a CNN (or NNS) guess that schedule throws the lead
away: the first 100 HIO iterations at beta 0.9 scramble a start that is already close.
``benchmarks/cnn_schedule.py`` measured nine candidates on 100 held-out patterns from the
shipped model's starts (``benchmarks/results/cnn_schedule.json``): ``2*(40*HIO+20*ER)`` at
beta 0.5 with shrink-wrap from iteration 20 kept the lead best. Once the answer is chosen
within the final support (``cdiflow.phasing.runner``), 100 more ER iterations in a support
frozen after iteration 120 (``ShrinkWrap.stop``) let it settle: over the 300 patterns of
``benchmarks/seeded_refinement.py`` that tail is what the ``gentle`` and ``gentle-120``
variants compare. The 220-iteration schedule is the default for guessed starts.
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

SEEDED_SETTINGS = RefineSettings("2*(40*HIO+20*ER)+100*ER", 0.5, ShrinkWrap(start=20, stop=120))
"""For a start that is a guess of the object (CNN, NNS): 120 gentle iterations, then 100
ER iterations in the support they left."""

GRADIENT_SETTINGS = RefineSettings(
    "2*(40*HIO+20*ER)+100*ADAM", SEEDED_SETTINGS.beta, SEEDED_SETTINGS.shrinkwrap
)
"""A guess refined by the gentle 120 iterations, then 100 gradient (Adam) steps through
the forward model in the support they left (``cdiflow.phasing.gradient``) instead of
the 100 ER: the ``cnn-gradient`` start of ``compare-init``."""

GUESS_KINDS = ("cnn", "nns", "adapted-cnn", "cnn-gradient")
"""Start kinds whose object is a guess of the answer rather than random phases."""


def settings_for(start_kind: str) -> RefineSettings:
    """The default settings for a start of ``start_kind`` (a name from ``phasing.starts``)."""
    if start_kind == "cnn-gradient":
        return GRADIENT_SETTINGS
    return SEEDED_SETTINGS if start_kind in GUESS_KINDS else PAPER_SETTINGS
