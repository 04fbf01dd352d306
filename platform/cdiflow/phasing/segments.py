"""A schedule that mixes projections and gradient steps, run segment by segment.

``"2*(40*HIO+20*ER)+100*ADAM"`` is projections (the batched engine, ``run_phasing``)
then Adam on the object (``gradient_refine``). The schedule is cut into maximal runs of
one kind; each segment starts from the best iterate of the one before, inside that
iterate's support; the shrink-wrap timetable counts iterations of the whole schedule
(so a segment that starts at iteration 60 updates the support when the whole schedule
would), and the answer is
the best support-consistent iterate of any segment. A gradient segment keeps its
support fixed (the shrink-wrapped one, inside the upper bound) and may stop early on a
chi^2 plateau; its curve then repeats its last value to the segment's length, so the
chi^2 curve always has one entry per scheduled iteration.

A schedule of projections only is one ``run_phasing`` call, exactly as before.
"""

from __future__ import annotations

import dataclasses
import itertools

import torch

from cdiflow.errors import InputError
from cdiflow.phasing.gradient import GradientConfig, gradient_refine
from cdiflow.phasing.runner import PhasingResult, run_phasing
from cdiflow.phasing.schedule import GRADIENT, Schedule, Step, as_schedule
from cdiflow.phasing.shrinkwrap import ShrinkWrap
from cdiflow.physics.farfield import PAPER, FarField

DEFAULT_GRADIENT = GradientConfig(lr=1e-3, parametrisation="cartesian")
"""ADAM steps' settings unless a caller gives others (the step count comes from the schedule).

A schedule's ADAM steps polish an iterate that projections brought near a solution, so
the step is small: after the gentle schedule from the shipped model's starts (24 test
patterns), 100 steps at lr 1e-3 on the real and imaginary parts lowered chi^2 on every
pattern (median 1.1e-4 -> 7.2e-5); lr 5e-3 reached 7.4e-5."""


@dataclasses.dataclass(frozen=True)
class Segment:
    """Iterations ``first .. first + len(schedule) - 1`` of one kind."""

    first: int
    schedule: Schedule

    @property
    def gradient(self) -> bool:
        return self.schedule.terms[0].algorithm == GRADIENT

    def __len__(self) -> int:
        return len(self.schedule)


def split(schedule: Schedule | str) -> list[Segment]:
    """The maximal runs of projections and of gradient steps, in order."""
    names = as_schedule(schedule).expand()
    segments, first = [], 0
    for _kind, run in itertools.groupby(names, key=lambda n: n == GRADIENT):
        steps = tuple(Step(name, len(list(group))) for name, group in itertools.groupby(run))
        segment = Segment(first, Schedule(steps))
        segments.append(segment)
        first += len(segment)
    return segments


def shifted(shrinkwrap: ShrinkWrap | None, offset: int) -> ShrinkWrap | None:
    """The shrink-wrap timetable of a segment starting at iteration ``offset``."""
    if shrinkwrap is None or offset == 0:
        return shrinkwrap
    start = shrinkwrap.start - offset
    if start < 0:  # the first update of the whole timetable that falls in the segment
        start %= shrinkwrap.every
    stop = shrinkwrap.stop - offset if shrinkwrap.stop else 0
    if shrinkwrap.stop and stop <= 0:  # frozen before the segment: no update in it
        return None
    return dataclasses.replace(shrinkwrap, start=start, stop=stop)


def run_schedule(
    modulus: torch.Tensor,
    start: torch.Tensor,
    support: torch.Tensor,
    schedule: Schedule | str,
    *,
    mask: torch.Tensor | None = None,
    beta=0.9,
    shrinkwrap: ShrinkWrap | None = None,
    upper_bound: torch.Tensor | None = None,
    snapshots: tuple[int, ...] = (),
    gradient: GradientConfig = DEFAULT_GRADIENT,
    physics: FarField = PAPER,
    threads: int | None = None,
) -> PhasingResult:
    """``run_phasing`` for any schedule; arguments as there, ``gradient`` for ADAM steps.

    ``threads`` goes to the projection segments (``run_phasing``'s single-threaded
    workers on slices of the batch, which do not stall on a loaded machine).
    """
    segments = split(schedule)
    if len(segments) == 1 and not segments[0].gradient:
        return run_phasing(
            modulus, start, support, schedule, mask=mask, beta=beta, shrinkwrap=shrinkwrap,
            upper_bound=upper_bound, snapshots=snapshots, threads=threads,
        )  # fmt: skip
    if snapshots:
        raise InputError("snapshots need a schedule of projections only (no ADAM steps)")
    x, s, parts = start, support, []
    for seg in segments:
        if seg.gradient:
            config = dataclasses.replace(gradient, steps=len(seg))
            res = gradient_refine(modulus, x, s, config, mask=mask, physics=physics)
        else:
            res = run_phasing(
                modulus, x, s, seg.schedule, mask=mask, beta=beta,
                shrinkwrap=shifted(shrinkwrap, seg.first), upper_bound=upper_bound,
                threads=threads,
            )  # fmt: skip
        # The next segment polishes this one's best iterate inside that iterate's own
        # support: the last iterate of HIO or of a late shrink-wrap update can be far
        # worse (measured: gradient steps from the last iterate and final support of
        # the gentle schedule ended above its best chi^2; from the best, below it).
        x = res.best_obj
        s = res.best_obj != 0
        parts.append((len(seg), res))
    return _join(parts)


def _join(parts: list[tuple[int, PhasingResult]]) -> PhasingResult:
    """One result from the segments' results: curves end to end, the best of all kept."""
    curves, collapsed = [], torch.zeros_like(parts[0][1].collapsed)
    best_obj, best = parts[0][1].best_obj, parts[0][1].best_chi2
    for length, res in parts:
        chi2 = res.chi2
        if chi2.shape[1] < length:  # a gradient segment that stopped early on a plateau
            chi2 = torch.cat([chi2, chi2[:, -1:].expand(-1, length - chi2.shape[1])], 1)
        curves.append(chi2)
        better = res.best_chi2 < best
        best_obj = torch.where(better[:, None, None], res.best_obj, best_obj)
        best = torch.where(better, res.best_chi2, best)
        collapsed |= res.collapsed
    last = parts[-1][1]
    return PhasingResult(
        obj=last.obj,
        best_obj=best_obj,
        support=last.support,
        chi2=torch.cat(curves, 1),
        final_chi2=last.final_chi2,
        best_chi2=best,
        collapsed=collapsed,
    )
