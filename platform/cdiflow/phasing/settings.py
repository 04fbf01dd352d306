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
variants compare.

That guess alone still lost to the random starts' median on about 30% of patterns: where
the CNN is poor, 120 gentle iterations cannot leave the wrong basin that 600 at beta 0.9
escape. The default for guessed starts (``SEEDED_SETTINGS``) therefore refines five
candidates in the CNN's support, the guess and four with its amplitude and random phases,
for 99 gentle iterations, and lets the one of least chi^2 settle with 60 ER: on 400
held-out patterns not in the benchmark it ended below the random median on chi^2 in
95-99% of patterns and on image error in 80-88% (three seeds), against 70% for the
guess alone, in 555 iterations of work.
"""

from __future__ import annotations

import dataclasses

from cdiflow.config import Config, require
from cdiflow.phasing.schedule import parse
from cdiflow.phasing.shrinkwrap import ShrinkWrap


@dataclasses.dataclass(frozen=True)
class RefineSettings(Config):
    """The schedule, HIO/RAAR feedback and shrink-wrap one refinement runs with.

    ``candidates`` > 1 (for a guessed start): the guess and ``candidates - 1`` copies of
    its amplitude and support with random phases all run ``schedule``; the one of least
    chi^2 goes on with ``tail`` in the support it was kept in, without shrink-wrap
    (``cdiflow.phasing.candidates``). ``tail`` may follow one candidate as well.
    """

    schedule: str = "5*(100*HIO+20*ER)"
    beta: float = 0.9
    shrinkwrap: ShrinkWrap | None = ShrinkWrap()
    candidates: int = 1
    tail: str = ""

    def validate(self) -> None:
        parse(self.schedule)  # ScheduleSyntaxError names the offending position
        if self.tail:
            parse(self.tail)
        require(0.0 < self.beta <= 1.0, f"beta must be in (0, 1], got {self.beta}")
        require(1 <= self.candidates <= 64, f"candidates must be in [1, 64], got {self.candidates}")

    @property
    def iterations(self) -> int:
        """Length of the answer's chi^2 curve: ``schedule``, then ``tail``."""
        return len(self.algorithms)

    @property
    def algorithms(self) -> tuple[str, ...]:
        """The answer's iterations in order: ``schedule`` expanded, then ``tail``."""
        tail = parse(self.tail).expand() if self.tail else ()
        return tuple(parse(self.schedule).expand()) + tuple(tail)

    @property
    def work(self) -> int:
        """Iterations computed per pattern: every candidate's ``schedule``, then ``tail``."""
        return self.work_until(self.iterations)

    def work_until(self, iterations: float) -> float:
        """Iterations computed per pattern until the answer's curve is ``iterations``
        long: every candidate runs the ``schedule``, the winner alone the ``tail``."""
        head = len(parse(self.schedule))
        return iterations + (self.candidates - 1) * min(iterations, head)


PAPER_SETTINGS = RefineSettings()
"""The paper's: 600 iterations, beta 0.9, shrink-wrap from iteration 100."""

SEEDED_SETTINGS = RefineSettings(
    "3*(25*HIO+8*ER)", 0.5, ShrinkWrap(start=20), candidates=5, tail="60*ER"
)
"""For a start that is a guess of the object (CNN, NNS): the guess and four copies of its
amplitude and support with random phases run 99 gentle iterations, and the one of least
chi^2 settles with 60 ER in its support: 555 iterations of work per pattern, fewer than
one random start's 600."""

GENTLE_SETTINGS = RefineSettings("2*(40*HIO+20*ER)+100*ER", 0.5, ShrinkWrap(start=20, stop=120))
"""The guess alone: 120 gentle iterations, then 100 ER in the support they left (the
default for guesses before ``candidates``; ``benchmarks/seeded_refinement.py``'s
``gentle`` variant)."""

GRADIENT_SETTINGS = RefineSettings(
    "2*(40*HIO+20*ER)+100*ADAM", GENTLE_SETTINGS.beta, GENTLE_SETTINGS.shrinkwrap
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
