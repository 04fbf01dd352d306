"""``refine``: batched iterative refinement with per-pattern validation and failure isolation.

This is what the beamtime job calls. Each pattern is checked up front (shape, finite,
non-negative, not all zero; start support not empty); bad patterns get a typed error in
``RefineResult.errors`` and the others run. Shrink-wrap collapse is reported per pattern
as ``SupportCollapsed``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from cdiflow import OBJECT_SIZE, PATTERN_SIZE
from cdiflow.errors import CdiflowError, InputError, SupportCollapsed
from cdiflow.phasing.schedule import PAPER_SCHEDULE, Schedule, as_schedule
from cdiflow.phasing.segments import run_schedule
from cdiflow.phasing.shrinkwrap import ShrinkWrap
from cdiflow.phasing.starts import Start
from cdiflow.physics.farfield import PAPER, FarField
from cdiflow.physics.fft import crop_centre
from cdiflow.reconstruction import Reconstruction

PAPER_SHRINKWRAP = ShrinkWrap()
"""The paper's shrink-wrap: from iteration 100, every 10 iterations."""


class BadPattern(InputError):
    """A pattern cannot be phased: wrong shape, non-finite or negative modulus, all zero."""


class EmptySupport(InputError):
    """A start support has no pixel."""


@dataclasses.dataclass(frozen=True)
class RefineResult:
    """Per-pattern results of ``refine`` (failed patterns hold zeros and NaN chi^2).

    Attributes
    ----------
    obj : (B, P, P) complex64, centred: best support-consistent iterate (the answer).
    final_obj : (B, P, P) complex64, centred: last iterate projected onto the support.
    support : (B, P, P) bool, centred: final support (``answer_support()``: that of ``obj``).
    chi2 : (B, n_iter) float32: chi^2 (eq. 5) per iteration.
    best_chi2, final_chi2 : (B,) float32.
    errors : one entry per pattern: None, or the typed error that stopped it.
    snapshots : {iteration: (B, P, P) complex64} iterates kept on request (``snapshots=``).
    """

    obj: torch.Tensor
    final_obj: torch.Tensor
    support: torch.Tensor
    chi2: torch.Tensor
    best_chi2: torch.Tensor
    final_chi2: torch.Tensor
    errors: tuple[CdiflowError | None, ...]
    snapshots: dict = dataclasses.field(default_factory=dict)

    def answer_support(self, rows=slice(None)) -> torch.Tensor:
        """(n, P, P) bool for the patterns ``rows``: the support ``obj`` was kept in (the
        support in force at its iteration, which shrink-wrap may have changed since):
        ``obj`` is projected onto it, so it is where ``obj`` is non-zero."""
        return self.obj[rows].abs() > 0

    @property
    def ok(self) -> np.ndarray:
        """(B,) bool: True where the pattern was refined without error."""
        return np.array([e is None for e in self.errors], dtype=bool)

    def amplitude_phase(self, size: int = OBJECT_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
        """Central ``size`` x ``size`` amplitude and phase (radians) of ``obj``."""
        box = crop_centre(self.obj, size)
        return box.abs(), box.angle()


def _select(value, index: torch.Tensor):
    """A scalar stays; a per-pattern sequence is cut to the patterns that run."""
    t = torch.as_tensor(value, dtype=torch.float64)
    return float(t) if t.ndim == 0 else t[index]


def _upper_bound(upper_bound, physics: FarField, index: torch.Tensor) -> torch.Tensor:
    """The upper bound of the patterns that run: (P, P) as it is, (B, P, P) cut to them."""
    if upper_bound is None:
        return physics.box()
    bound = torch.as_tensor(upper_bound, dtype=torch.bool)
    return bound[index] if bound.ndim == 3 else bound


def check_pattern(modulus, size: int = PATTERN_SIZE) -> torch.Tensor:
    """Return one pattern as a float32 tensor or raise ``BadPattern`` saying why."""
    m = torch.as_tensor(np.asarray(modulus) if not torch.is_tensor(modulus) else modulus)
    if tuple(m.shape) != (size, size):
        raise BadPattern(f"pattern has shape {tuple(m.shape)}, expected ({size}, {size})")
    if m.is_complex() or not m.is_floating_point():
        m = m.real if m.is_complex() else m
        m = m.to(torch.float32)
    if not torch.isfinite(m).all():
        raise BadPattern(f"pattern has {int((~torch.isfinite(m)).sum())} non-finite value(s)")
    if (m < 0).any():
        raise BadPattern("pattern has negative values; expected a modulus sqrt(I) >= 0")
    if not (m > 0).any():
        raise BadPattern("pattern is all zero")
    return m.to(torch.float32)


def _check_start(start: Start, i: int) -> None:
    if not bool(start.support[i].any()):
        raise EmptySupport("start support is empty")
    if not bool(torch.isfinite(torch.view_as_real(start.object[i])).all()):
        raise BadPattern("start object has non-finite values")


def refine(
    modulus,
    start: Start,
    schedule: Schedule | str = PAPER_SCHEDULE,
    *,
    mask=None,
    beta=0.9,
    shrinkwrap: ShrinkWrap | None = PAPER_SHRINKWRAP,
    upper_bound: torch.Tensor | None = None,
    device: str | torch.device | None = None,
    snapshots: tuple[int, ...] = (),
    strict: bool = False,
    physics: FarField = PAPER,
    threads: int | None = None,
) -> RefineResult:
    """Refine a batch of patterns from ``start`` with ``schedule`` (paper: 600 ER/HIO).

    Parameters
    ----------
    modulus : (B, P, P) array/tensor or a sequence of B (P, P) arrays: centred sqrt(I).
    start : a ``Start`` of B patterns (``cdiflow.phasing.starts``).
    schedule : ``Schedule`` or string (``ADAM`` steps: gradient steps, ``phasing.segments``).
    mask : optional (P, P) or (B, P, P) bool, True where measured.
    beta : HIO/RAAR feedback parameter: a float or one value per pattern (B,).
    shrinkwrap : shrink-wrap settings (None: fixed support).
    upper_bound : (P, P) or (B, P, P) bool (a batch may mix upper bounds); default the
        object box of ``physics`` (32 x 32 of 64 x 64).
    device, snapshots : where to run (default CPU); iterations whose iterate to keep.
    strict, physics : raise the first pattern's error instead of recording it; the
        geometry (pattern size P and object box), default the paper's.
    threads : the engine as this many single-threaded workers on slices of the batch
        (``run_phasing``); None: torch's own threads.
    Returns ``RefineResult``; ``errors[i]`` is None or the typed error for pattern i.
    """
    schedule = as_schedule(schedule)
    batch = len(modulus)
    if len(start) != batch:
        raise InputError(f"{batch} patterns but a start for {len(start)}")
    errors, checked = _checked(modulus, start, physics.pattern_size, strict)
    good = [i for i in range(batch) if errors[i] is None]
    out = _empty_result(batch, len(schedule), physics.pattern_size, snapshots)
    if good:
        dev = torch.device(device or "cpu")
        idx = torch.tensor(good)
        res = run_schedule(
            torch.stack(checked).to(dev),
            start.object[idx].to(dev),
            start.support[idx].to(dev),
            schedule,
            mask=_rows_of(mask, idx, dev),
            beta=_select(beta, idx),
            shrinkwrap=shrinkwrap,
            upper_bound=_upper_bound(upper_bound, physics, idx).to(dev),
            snapshots=snapshots,
            physics=physics,
            threads=threads,
        )
        _fill(out, res, idx)
        _record_collapses(errors, res.collapsed, good, strict)
    return dataclasses.replace(out, errors=tuple(errors))


def _record_collapses(errors: list, collapsed: torch.Tensor, good: list[int], strict: bool):
    """A ``SupportCollapsed`` for each pattern whose shrink-wrap collapsed."""
    for j, i in enumerate(good):
        if bool(collapsed[j]):
            errors[i] = SupportCollapsed(f"pattern {i}: shrink-wrap left an empty support")
            if strict:
                raise errors[i]


def _checked(modulus, start: Start, size: int, strict: bool):
    """Per pattern None or its input error, and the patterns that passed, as tensors."""
    errors: list[CdiflowError | None] = [None] * len(modulus)
    checked = []
    for i in range(len(modulus)):
        try:
            pattern = check_pattern(modulus[i], size)
            _check_start(start, i)
        except InputError as exc:
            errors[i] = exc
            if strict:
                raise
            continue
        checked.append(pattern)
    return errors, checked


def _empty_result(batch: int, n_iter: int, p: int, snapshots) -> RefineResult:
    """Zeros and NaN for every pattern: what a failed pattern keeps."""
    return RefineResult(
        obj=torch.zeros(batch, p, p, dtype=torch.complex64),
        final_obj=torch.zeros(batch, p, p, dtype=torch.complex64),
        support=torch.zeros(batch, p, p, dtype=torch.bool),
        chi2=torch.full((batch, n_iter), float("nan")),
        best_chi2=torch.full((batch,), float("nan")),
        final_chi2=torch.full((batch,), float("nan")),
        errors=(),
        snapshots={k: torch.zeros(batch, p, p, dtype=torch.complex64) for k in snapshots},
    )


def select_rows(value, index: torch.Tensor):
    """Rows ``index`` of a per-pattern (B, P, P) array or tensor (as a tensor); a shared
    (P, P) one, None and anything else as they are. How the callers that split or repeat
    a batch (candidates, settings groups) cut a mask or upper bound along with it."""
    if isinstance(value, np.ndarray):
        value = torch.from_numpy(value)
    return value[index] if torch.is_tensor(value) and value.ndim == 3 else value


def _rows_of(mask, index: torch.Tensor, device):
    """The mask of the patterns that run: (P, P) as it is, (B, P, P) cut to them."""
    if mask is None:
        return None
    return select_rows(torch.as_tensor(mask, dtype=torch.bool), index).to(device)


def _fill(out: RefineResult, res, index: torch.Tensor) -> None:
    """Write the engine's results for the patterns that ran into ``out`` (CPU, complex64)."""
    for k, v in res.snapshots.items():
        out.snapshots[k][index] = v.cpu().to(torch.complex64)
    out.obj[index] = res.best_obj.cpu().to(torch.complex64)
    out.final_obj[index] = res.obj.cpu().to(torch.complex64)
    out.support[index] = res.support.cpu()
    out.chi2[index] = res.chi2.cpu()
    out.best_chi2[index] = res.best_chi2.cpu()
    out.final_chi2[index] = res.final_chi2.cpu()


class IterativeReconstructor:
    """The iterative engine as a reconstructor: a start, then ``refine``.

    Parameters
    ----------
    start : ``(modulus (B, P, P), physics) -> Start``, e.g. a random-rectangle start or a
        CNN start (``cdiflow.phasing.starts``).
    schedule, shrinkwrap, beta, device : as ``refine``.

    The chi^2 curve is the per-iteration chi^2 with the kept answer's chi^2 appended, so
    ``final_chi2`` is the chi^2 of the returned object. Failed patterns carry NaN.
    """

    def __init__(
        self,
        start,
        schedule: Schedule | str = PAPER_SCHEDULE,
        shrinkwrap: ShrinkWrap | None = PAPER_SHRINKWRAP,
        beta: float = 0.9,
        device: str | torch.device | None = None,
    ):
        self.start, self.schedule = start, as_schedule(schedule)
        self.shrinkwrap, self.beta, self.device = shrinkwrap, beta, device

    def reconstruct(self, modulus, mask, physics: FarField) -> Reconstruction:
        """Refine a batch of (B, P, P) moduli from ``self.start``."""
        modulus = torch.as_tensor(modulus, dtype=torch.float32)
        res = refine(
            modulus,
            self.start(modulus, physics),
            self.schedule,
            mask=mask,
            beta=self.beta,
            shrinkwrap=self.shrinkwrap,
            device=self.device,
            physics=physics,
        )
        curve = torch.cat([res.chi2, res.best_chi2[:, None]], dim=1)
        return Reconstruction.from_object(physics.crop(res.obj), physics.crop(res.support), curve)
