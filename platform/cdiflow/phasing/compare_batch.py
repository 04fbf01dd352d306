"""The paper's Fig. 5(f) at scale: the four refinement starts on many patterns, batched.

``compare_patterns`` refines N patterns from each start kind of Fig. 5(f): the two
random-phase starts ``repeats`` times per pattern (N*R runs), the CNN and NNS starts once
per pattern. Each start kind is refined with one ``refine_settings`` call per chunk of at most
``batch_size`` runs; a chunk holds whole patterns (all R repeats of each), so a few
thousand 64 x 64 complex64 runs are phased at once on CPU or GPU. The random phases of
a pattern come from a generator seeded with (seed, start kind, its test-split index), so
its runs do not depend on which other patterns are compared nor on the chunking (they
differ from the single-pattern ``compare_starts``, which draws both random starts from
one generator). ``cdiflow.phasing.compare_summary`` reduces the runs to the figures of
merit and the JSON layout.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import numpy as np
import torch

from cdiflow.errors import InputError
from cdiflow.phasing.candidates import refine_settings
from cdiflow.phasing.compare import image_errors, truth_object
from cdiflow.phasing.refine import PAPER_SHRINKWRAP
from cdiflow.phasing.schedule import Schedule, as_schedule
from cdiflow.phasing.settings import PAPER_SETTINGS, RefineSettings, settings_for
from cdiflow.phasing.shrinkwrap import ShrinkWrap
from cdiflow.phasing.starts import (
    DEFAULT_THRESHOLD,
    Start,
    from_prediction,
    nns_start,
    random_phase_cnn_support,
    random_phase_rectangle,
)

RANDOM_KINDS = ("random-rectangle", "random-cnn-support")
"""The random-phase starts, (i) and (ii) of Fig. 5(f)."""

BAND_PERCENTILES = (16.0, 50.0, 84.0)
"""Percentiles over the R runs kept per iteration: the Fig. 5(f) band and its median."""

_KIND_IDS = {"random-rectangle": 1, "random-cnn-support": 2, "cnn": 3, "nns": 4, "cnn-gradient": 5}
GUESS_KINDS = ("cnn", "cnn-gradient", "nns")
"""The starts from a guess (one run per pattern): CNN, CNN + gradient steps, NNS."""


@dataclasses.dataclass(frozen=True)
class StartRuns:
    """Refinement runs of one start kind on N patterns, R runs each (R = 1: CNN, NNS).

    Attributes
    ----------
    name : start kind ("random-rectangle", "random-cnn-support", "cnn", "nns").
    best_chi2 : (N, R) float32 chi^2 of each run's answer (best in its final support).
    amplitude_error, phase_rms : (N, R) float32 image errors after alignment.
    failed : (N,) int64 runs per pattern that ``refine`` flagged (bad input, collapsed
        support); a bad input's values are NaN, a collapsed run keeps its values.
    support_pixels : (N, R) int64 pixels in each answer's support. chi^2 falls as a
        support loosens, so starts are compared on chi^2 fairly only at like supports.
    chi2_band : (N, 3, n_iter) float32 16th, 50th and 84th percentile over the R runs of
        chi^2 per iteration (for R = 1 all three are the run's curve).
    example_chi2 : (R, n_iter) float32 every run's curve of the example pattern.
    """

    name: str
    best_chi2: np.ndarray
    amplitude_error: np.ndarray
    phase_rms: np.ndarray
    failed: np.ndarray
    support_pixels: np.ndarray
    chi2_band: np.ndarray
    example_chi2: np.ndarray

    @property
    def repeats(self) -> int:
        return int(self.best_chi2.shape[1])

    @property
    def chi2_curve(self) -> np.ndarray:
        """(N, n_iter) median chi^2 per iteration (the curve itself when R = 1)."""
        return self.chi2_band[:, 1]

    def errors(self) -> dict[str, np.ndarray]:
        """{"amplitude_error": (N, R), "phase_rms": (N, R)}."""
        return {"amplitude_error": self.amplitude_error, "phase_rms": self.phase_rms}


@dataclasses.dataclass(frozen=True)
class _Job:
    """What every chunk of a comparison shares."""

    modulus: torch.Tensor  # (N, P, P) float32
    truth: torch.Tensor  # (N, n, n) complex64
    settings: object  # start kind -> RefineSettings
    batch_size: int
    example: int
    device: object
    seed: int
    rows: np.ndarray  # (N,) test-split index per pattern: seeds the candidates


def pattern_generator(seed: int, kind: str, index: int) -> torch.Generator:
    """The generator of pattern ``index``'s random phases: a pure function of its inputs."""
    state = np.random.SeedSequence([seed, _KIND_IDS[kind], index]).generate_state(1)
    return torch.Generator().manual_seed(int(state[0]))


def _concat(parts: list[Start]) -> Start:
    objects = torch.cat([p.object for p in parts])
    return Start(objects, torch.cat([p.support for p in parts]), parts[0].name)


def _random_start(kind, index, repeats, seed, rows, amplitude, threshold) -> Start:
    """Start (i) or (ii) for the patterns ``index``, ``repeats`` runs each, pattern-major.

    ``rows[i]`` is pattern i's test-split index, which seeds its random phases.
    """
    parts = []
    for i in index.tolist():
        g = pattern_generator(seed, kind, int(rows[i]))
        if kind == "random-rectangle":
            parts.append(random_phase_rectangle(repeats, g))
        else:
            amp = np.repeat(amplitude[i][None], repeats, 0)
            parts.append(random_phase_cnn_support(amp, g, threshold))
    return _concat(parts)


def _start_for(name, arrays, repeats, seed, rows, threshold, index) -> Start:
    """The start of kind ``name`` for the patterns ``index`` (``arrays``: CNN or NNS)."""
    if name in RANDOM_KINDS:
        return _random_start(name, index, repeats, seed, rows, arrays, threshold)
    if name == "nns":
        return nns_start(arrays[0][index], arrays[1][index], threshold)
    return from_prediction(arrays[0][index], arrays[1][index], threshold, name=name)


def _refine_chunk(job: _Job, index: np.ndarray, start: Start, repeats: int) -> dict:
    """Refine the runs of the patterns ``index``; values reshaped to (n, R, ...)."""
    idx = torch.as_tensor(index)
    moduli = job.modulus[idx].repeat_interleave(repeats, 0)
    s = job.settings(start.name)
    rngs = None
    if s.candidates > 1:  # a guess's candidates: random phases seeded like the random starts'
        rngs = [
            pattern_generator(job.seed, start.name, int(job.rows[i])) for i in index.repeat(repeats)
        ]
    res = refine_settings(moduli, start, s, rngs, device=job.device)
    errors = image_errors(res.obj, job.truth[idx].repeat_interleave(repeats, 0))
    bad = ~torch.isfinite(res.best_chi2)
    n, shape = len(index), (len(index), repeats)
    curves = res.chi2.numpy().reshape(n, repeats, -1)
    band = np.percentile(curves, BAND_PERCENTILES, axis=1).transpose(1, 0, 2)
    hit = np.flatnonzero(index == job.example)
    return {
        "best_chi2": res.best_chi2.numpy().reshape(shape),
        "amplitude_error": errors["amplitude"].masked_fill(bad, np.nan).numpy().reshape(shape),
        "phase_rms": errors["phase_rms"].masked_fill(bad, np.nan).numpy().reshape(shape),
        "failed": (~res.ok).reshape(shape).sum(1),
        "support_pixels": res.answer_support().sum((-2, -1)).numpy().reshape(shape),
        "chi2_band": curves if repeats == 1 else band.astype(np.float32),
        "example_chi2": curves[hit[0]] if hit.size else None,
    }


def _run_kind(job: _Job, name: str, make_start, repeats: int) -> StartRuns:
    """All chunks of one start kind; ``make_start(index) -> Start`` of len(index)*R runs."""
    count = len(job.modulus)
    step = max(1, job.batch_size // repeats)
    parts = []
    for a in range(0, count, step):
        index = np.arange(a, min(a + step, count))
        parts.append(_refine_chunk(job, index, make_start(index), repeats))
    joined = {k: np.concatenate([p[k] for p in parts]) for k in parts[0] if k != "example_chi2"}
    if repeats == 1:
        joined["chi2_band"] = np.repeat(joined["chi2_band"], len(BAND_PERCENTILES), 1)
    example = next(p["example_chi2"] for p in parts if p["example_chi2"] is not None)
    return StartRuns(name=name, example_chi2=example, **joined)


def _check(modulus, truth_amplitude, predicted, nearest, rows, repeats, batch_size, example):
    if repeats < 1:
        raise InputError(f"repeats must be >= 1, got {repeats}")
    if batch_size < 1:
        raise InputError(f"batch_size must be >= 1, got {batch_size}")
    count = len(modulus)
    if count < 1 or len(truth_amplitude) != count:
        raise InputError(f"{count} patterns but {len(truth_amplitude)} truths")
    for what, arrays in (("CNN predictions", predicted), ("NNS matches", nearest)):
        if arrays is not None and not len(arrays[0]) == len(arrays[1]) == count:
            raise InputError(f"{count} patterns but {len(arrays[0])} {what}")
    if len(rows) != count:
        raise InputError(f"{count} patterns but {len(rows)} indices")
    if not 0 <= example < count:
        raise InputError(f"example {example} is not one of the {count} patterns")


def compare_patterns(
    modulus,
    truth_amplitude,
    truth_phase,
    predicted: tuple | None = None,
    nearest: tuple | None = None,
    repeats: int = 300,
    seed: int = 0,
    schedule: Schedule | str | None = None,
    shrinkwrap: ShrinkWrap | None = PAPER_SHRINKWRAP,
    settings: Callable[[str], RefineSettings] = settings_for,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 2048,
    example: int = 0,
    indices=None,
    device=None,
    gradient: bool = False,
) -> dict[str, StartRuns]:
    """Refine N patterns from the four starts of Fig. 5(f), batched.

    Parameters
    ----------
    modulus : (N, P, P) centred measured moduli.
    truth_amplitude, truth_phase : (N, n, n) ground truth amplitude and phase target.
    predicted : optional CNN (amplitude, phase target), each (N, n, n): starts (ii), (iii).
    nearest : optional NNS matches (amplitude, phase target), each (N, n, n): start (iv).
    repeats : runs of each random start per pattern (paper: 300).
    seed : base seed of the random phases (see ``pattern_generator``).
    schedule, shrinkwrap : one schedule (beta 0.9) and shrink-wrap for every start, as
        the paper's Fig. 5(f) ran them; None (the default) uses ``settings`` instead.
    settings : start kind -> ``RefineSettings``; by default the paper's for the random
        starts and the gentle schedule for the CNN and NNS guesses
        (``cdiflow.phasing.settings``), so each start gets the refinement it would get
        in the beamtime job.
    threshold : binarisation threshold of the predicted amplitudes (supports).
    batch_size : most runs per ``refine`` call (at least one whole pattern's R runs).
    example : which pattern keeps every run's curve (``StartRuns.example_chi2``).
    indices : (N,) test-split index of each pattern, which seeds its random phases
        (default 0..N-1).
    device : where to run (default: CPU).
    gradient : also run ``cnn-gradient``: the CNN start refined with ``settings`` of that
        kind (by default the gentle schedule, then 100 Adam steps).

    Returns
    -------
    {start name: StartRuns}, in the order (i), (ii), (iii), (iv) of those available, then
    ``cnn-gradient``.
    """
    rows = np.arange(len(modulus)) if indices is None else np.asarray(indices, dtype=np.int64)
    _check(modulus, truth_amplitude, predicted, nearest, rows, repeats, batch_size, example)
    job = _Job(
        modulus=torch.as_tensor(np.asarray(modulus), dtype=torch.float32),
        truth=truth_object(truth_amplitude, truth_phase),
        settings=settings if schedule is None else _uniform(schedule, shrinkwrap),
        batch_size=batch_size,
        example=example,
        device=device,
        seed=seed,
        rows=rows,
    )
    out = {}
    for name, (arrays, r) in _kinds(predicted, nearest, repeats, gradient).items():
        make = functools.partial(_start_for, name, arrays, r, seed, rows, threshold)
        out[name] = _run_kind(job, name, make, r)
    return out


def _uniform(schedule, shrinkwrap) -> Callable[[str], RefineSettings]:
    """The same settings for every start kind (the paper's Fig. 5(f) protocol)."""
    one = RefineSettings(str(as_schedule(schedule)), PAPER_SETTINGS.beta, shrinkwrap)
    return lambda _kind: one


def _kinds(predicted, nearest, repeats, gradient=False) -> dict[str, tuple]:
    """{start name: (its arrays, runs per pattern)} of the starts the inputs allow."""
    kinds = {"random-rectangle": (None, repeats)}
    if predicted is not None:
        amp, phase = (np.asarray(a, dtype=np.float32) for a in predicted)
        kinds["random-cnn-support"] = (amp, repeats)
        kinds["cnn"] = ((amp, phase), 1)
    if nearest is not None:
        kinds["nns"] = (tuple(np.asarray(a, dtype=np.float32) for a in nearest), 1)
    if gradient and predicted is not None:
        kinds["cnn-gradient"] = kinds["cnn"]
    return kinds
