"""Refine a batch whose runs need different settings: one ``refine`` call per setting.

The beamtime job refines every scan from a CNN guess and from random starts at once. A
guess wants its candidates and gentle schedule and random phases the paper's 600
(``cdiflow.phasing.settings``), so the runs are grouped by their settings, each group is
one batched ``refine_settings`` call, and the results are put back in the runs' order. Curves of
the shorter schedules are padded with NaN to the longest; ``iterations`` says how many
iterations each run had.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import torch

from cdiflow.errors import InputError
from cdiflow.phasing.candidates import refine_settings
from cdiflow.phasing.refine import RefineResult, select_rows
from cdiflow.phasing.settings import RefineSettings
from cdiflow.phasing.starts import Start
from cdiflow.physics.farfield import PAPER, FarField


@dataclasses.dataclass(frozen=True)
class GroupedResult:
    """``result`` of every run in the caller's order; ``iterations`` (B,) int64 per run."""

    result: RefineResult
    iterations: torch.Tensor


def refine_grouped(
    modulus,
    start: Start,
    settings: Sequence[RefineSettings],
    *,
    mask=None,
    upper_bound=None,
    device=None,
    physics: FarField = PAPER,
    threads: int | None = None,
    rngs: Sequence | None = None,
) -> GroupedResult:
    """Refine run i of ``modulus`` (B, P, P) from ``start`` with ``settings[i]``.

    ``mask`` and ``upper_bound`` are (P, P) or one per run (B, P, P), and ``threads``
    (CPU workers per call) is as in ``refine``. ``rngs``: one seed or generator per run,
    for the random phases of settings with ``candidates`` > 1
    (``cdiflow.phasing.candidates``).
    """
    modulus = torch.as_tensor(modulus)
    batch = len(modulus)
    if len(settings) != batch or len(start) != batch:
        raise InputError(f"{batch} patterns, {len(start)} starts, {len(settings)} settings")
    groups: dict[RefineSettings, list[int]] = {}
    for i, s in enumerate(settings):
        groups.setdefault(s, []).append(i)
    parts = []
    for s, rows in groups.items():
        index = torch.tensor(rows)
        res = refine_settings(
            modulus[index],
            start.select(index),
            s,
            None if rngs is None else [rngs[i] for i in rows],
            mask=select_rows(mask, index),
            threads=threads,
            upper_bound=select_rows(upper_bound, index),
            device=device,
            physics=physics,
        )
        parts.append((index, res))
    return _merge(parts, batch)


def _merge(parts: list[tuple[torch.Tensor, RefineResult]], batch: int) -> GroupedResult:
    """Put each group's rows back at their places; curves NaN-padded to the longest."""
    longest = max(res.chi2.shape[1] for _, res in parts)
    first = parts[0][1]
    p = first.obj.shape[-1]
    obj = torch.zeros(batch, p, p, dtype=first.obj.dtype)
    final_obj, support = torch.zeros_like(obj), torch.zeros(batch, p, p, dtype=torch.bool)
    chi2 = torch.full((batch, longest), float("nan"))
    best, final = torch.full((batch,), float("nan")), torch.full((batch,), float("nan"))
    iterations = torch.zeros(batch, dtype=torch.int64)
    errors: list = [None] * batch
    for index, res in parts:
        obj[index], final_obj[index], support[index] = res.obj, res.final_obj, res.support
        chi2[index, : res.chi2.shape[1]] = res.chi2
        best[index], final[index] = res.best_chi2, res.final_chi2
        iterations[index] = res.chi2.shape[1]
        for j, i in enumerate(index.tolist()):
            errors[i] = res.errors[j]
    result = RefineResult(obj, final_obj, support, chi2, best, final, tuple(errors))
    return GroupedResult(result, iterations)
