"""Refine a guessed start as several candidates and keep the one of least chi^2.

A CNN guess is close to the answer for most patterns and in the wrong basin for some; a
short gentle refinement keeps the first and cannot leave the second. ``refine_settings``
runs ``RefineSettings.candidates`` starts per pattern in one batched ``refine`` call:
the guess and copies of its amplitude and support with random phases
(``starts.phase_scrambled``), all with ``schedule``. Per pattern the candidate whose
answer has the least chi^2 goes on with ``tail`` in the support it was kept in (no
shrink-wrap), and the result is that of one refinement: its chi^2 curve is the winner's
``schedule`` followed by ``tail``.

Chi^2 compares the candidates fairly because they share pattern, support start and
shrink-wrap; their answers' supports differ only as shrink-wrap moved them.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from cdiflow.phasing.refine import RefineResult, refine, select_rows
from cdiflow.phasing.schedule import as_schedule
from cdiflow.phasing.settings import RefineSettings
from cdiflow.phasing.starts import Start, phase_scrambled


def refine_settings(
    modulus, start: Start, settings: RefineSettings, rngs: Sequence | None = None, **kwargs
) -> RefineResult:
    """``refine`` ``start`` (B patterns) with ``settings``: its schedule, beta and
    shrink-wrap, its candidates and tail. ``rngs``: one seed or ``torch.Generator`` per
    pattern for the candidates' random phases (needed when ``candidates`` > 1).
    ``kwargs`` (mask, upper_bound, device, physics, threads) go to every ``refine`` call;
    a per-pattern (B, P, P) mask or upper bound is repeated for the candidates."""
    k, batch = settings.candidates, len(start)
    if k > 1 and rngs is None:
        raise ValueError(f"{k} candidates need one random generator per pattern")
    modulus = torch.as_tensor(np.asarray(modulus) if not torch.is_tensor(modulus) else modulus)
    head, head_kwargs = start, kwargs
    if k > 1:
        head = _interleave(start, phase_scrambled(start, k - 1, rngs), k)
        repeat = torch.arange(batch).repeat_interleave(k)
        head_kwargs = {n: select_rows(v, repeat) for n, v in kwargs.items()}
    res = refine(
        modulus if k == 1 else modulus.repeat_interleave(k, 0), head, settings.schedule,
        beta=settings.beta, shrinkwrap=settings.shrinkwrap, **head_kwargs,
    )  # fmt: skip
    if k > 1:
        res = _pick(res, k)
    if not settings.tail:
        return res
    return _then_tail(modulus, res, settings, start.name, kwargs)


def _interleave(start: Start, copies: Start, k: int) -> Start:
    """Pattern-major: pattern i's guess, then its k - 1 copies."""
    b, shape = len(start), start.object.shape[1:]
    obj = torch.cat([start.object[:, None], copies.object.reshape(b, k - 1, *shape)], 1)
    sup = torch.cat([start.support[:, None], copies.support.reshape(b, k - 1, *shape)], 1)
    return Start(obj.reshape(b * k, *shape), sup.reshape(b * k, *shape), start.name)


def _pick(res: RefineResult, k: int) -> RefineResult:
    """Per pattern, the candidate of least chi^2 (a failed one, NaN, only if all are)."""
    chi2 = res.best_chi2.reshape(-1, k)
    winner = torch.nan_to_num(chi2, nan=float("inf")).argmin(1)
    rows = torch.arange(chi2.shape[0]) * k + winner
    fields = {
        f.name: getattr(res, f.name)[rows]
        for f in dataclasses.fields(res)
        if f.name not in ("errors", "snapshots")
    }
    errors = tuple(res.errors[i] for i in rows.tolist())
    snaps = {it: v[rows] for it, v in res.snapshots.items()}
    return RefineResult(**fields, errors=errors, snapshots=snaps)


def _then_tail(modulus, res: RefineResult, settings: RefineSettings, name: str, kwargs):
    """``settings.tail`` from each answer in its own support; the curves joined."""
    support = res.answer_support()
    ok = torch.tensor(res.ok) & support.flatten(1).any(1)
    out = _extend(res, len(as_schedule(settings.tail)))
    if not bool(ok.any()):
        return out
    idx = torch.nonzero(ok)[:, 0]
    tail = refine(
        modulus[idx], Start(res.obj[idx], support[idx], name), settings.tail,
        beta=settings.beta, shrinkwrap=None,
        **{n: select_rows(v, idx) for n, v in kwargs.items()},
    )  # fmt: skip
    for field in ("obj", "final_obj", "support", "best_chi2", "final_chi2"):
        getattr(out, field)[idx] = getattr(tail, field)
    out.chi2[idx, res.chi2.shape[1] :] = tail.chi2
    errors = list(out.errors)
    for j, i in enumerate(idx.tolist()):
        errors[i] = errors[i] or tail.errors[j]
    return dataclasses.replace(out, errors=tuple(errors))


def _extend(res: RefineResult, n: int) -> RefineResult:
    """``res`` with its chi^2 curve NaN-padded by ``n`` iterations (copies, not views)."""
    pad = torch.full((res.chi2.shape[0], n), float("nan"))
    return dataclasses.replace(
        res,
        obj=res.obj.clone(), final_obj=res.final_obj.clone(), support=res.support.clone(),
        best_chi2=res.best_chi2.clone(), final_chi2=res.final_chi2.clone(),
        chi2=torch.cat([res.chi2, pad], 1),
    )  # fmt: skip
