"""Figures of merit of the batched Fig. 5(f) comparison, and its JSON layout.

``summarise`` reduces one start (one run per pattern) against a random start (R runs per
pattern): the fraction of patterns where it ends below the random runs' median final
chi^2 (and median image errors), and the iteration at which its chi^2 curve first
reaches that median. ``comparison_json`` and ``comparison_arrays`` lay out the runs of
``cdiflow.phasing.compare_batch.compare_patterns`` for ``compare_init.json`` and its .npz.
"""

from __future__ import annotations

import numpy as np

from cdiflow.phasing.compare_batch import BAND_PERCENTILES, GUESS_KINDS, RANDOM_KINDS, StartRuns


def row_median(values) -> np.ndarray:
    """(N, ...) -> (N,) float64 median of each row over its finite values (NaN if none)."""
    v = np.asarray(values, dtype=np.float64)
    v = v.reshape(len(v), -1)
    out = np.full(len(v), np.nan)
    ok = np.isfinite(v).any(1)
    out[ok] = np.nanmedian(v[ok], axis=1)
    return out


def first_reach(curves, targets) -> list[int | None]:
    """Per row, the 1-based iteration at which ``curves[i]`` first is <= ``targets[i]``.

    ``curves`` (N, n_iter) holds chi^2 of the iterate entering each iteration (the
    x-axis of Fig. 5f counts from 1); None where it never gets there or the target is NaN.
    """
    hit = np.asarray(curves, dtype=np.float64) <= np.asarray(targets, dtype=np.float64)[:, None]
    first = hit.argmax(1)
    return [int(f) + 1 if h.any() else None for f, h in zip(first, hit, strict=True)]


def fraction_below(values, references) -> float | None:
    """Fraction of rows with ``values < references``, over rows where both are finite."""
    a, b = np.asarray(values, dtype=np.float64), np.asarray(references, dtype=np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    return float(np.mean(a[ok] < b[ok])) if ok.any() else None


def summarise(best_chi2, curves, errors: dict, random_chi2, random_errors: dict) -> dict:
    """One start (one run per pattern) against the median of a random start's R runs.

    Parameters
    ----------
    best_chi2 : (N,) final chi^2 of the start on each pattern.
    curves : (N, n_iter) its chi^2 per iteration.
    errors : {kind: (N,)} its image errors (e.g. "amplitude_error", "phase_rms").
    random_chi2 : (N, R) final chi^2 of the random runs.
    random_errors : {kind: (N, R)} their image errors, same kinds as ``errors``.

    Returns
    -------
    dict: ``random_median_chi2`` (N,) float64; ``iterations`` (N,) 1-based int or None
    (``first_reach`` of that median); ``fraction_below_median_chi2``;
    ``fraction_below_median_image_error`` {kind: fraction}; ``iterations_to_median``
    {"median": ``median_reach`` of the iterations, "nulls": how many are None}.
    """
    target = row_median(random_chi2)
    iterations = first_reach(curves, target)
    return {
        "random_median_chi2": target,
        "iterations": iterations,
        "fraction_below_median_chi2": fraction_below(np.ravel(best_chi2), target),
        "fraction_below_median_image_error": {
            k: fraction_below(np.ravel(errors[k]), row_median(random_errors[k])) for k in errors
        },
        "iterations_to_median": {
            "median": median_reach(iterations),
            "nulls": iterations.count(None),
        },
    }


def median_reach(iterations: list[int | None]) -> float | None:
    """The median over all patterns of the iteration each first reaches a target, a
    pattern that never does counting as never (None when the median falls there, i.e.
    half or more never do). Dropping those patterns instead would flatter a start that
    reaches the target fast where it reaches it at all."""
    values = np.array([np.inf if k is None else k for k in iterations], dtype=np.float64)
    median = float(np.median(values)) if len(values) else np.inf
    return median if np.isfinite(median) else None


def _number(x) -> float | None:
    """A JSON number: float, or None for NaN / inf."""
    x = float(x)
    return x if np.isfinite(x) else None


def _describe(values: np.ndarray) -> dict:
    """Median (``row_median``), mean, std, 16th / 84th percentile of the finite values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    keys = ("median", "mean", "std", "p16", "p84")
    if not v.size:
        return {**dict.fromkeys(keys), "finite": 0}
    lo, hi = np.percentile(v, (BAND_PERCENTILES[0], BAND_PERCENTILES[2]))
    numbers = (row_median(v[None])[0], v.mean(), v.std(), lo, hi)
    return {**{k: float(x) for k, x in zip(keys, numbers, strict=True)}, "finite": int(v.size)}


def _start_record(runs: StartRuns, i: int) -> dict:
    """Pattern i's numbers of one start: statistics over R runs for a random start."""
    record = {"runs": runs.repeats, "failed": int(runs.failed[i])}
    for key, values in (("best_chi2", runs.best_chi2), *runs.errors().items()):
        many = runs.name in RANDOM_KINDS
        record[key] = _describe(values[i]) if many else _number(values[i, 0])
    return record


def _versus_random(runs: dict[str, StartRuns], guess: str = "cnn") -> dict[str, dict]:
    """{random kind: ``summarise`` of the ``guess`` start against it} (empty without it)."""
    if guess not in runs:
        return {}
    start = runs[guess]
    errors = {k: v[:, 0] for k, v in start.errors().items()}
    return {
        kind: summarise(
            start.best_chi2[:, 0],
            start.chi2_curve,
            errors,
            runs[kind].best_chi2,
            runs[kind].errors(),
        )
        for kind in RANDOM_KINDS
        if kind in runs
    }


def _guess_summary(versus: dict[str, dict]) -> dict:
    """The fractions and iterations of one guess start against each random start."""
    return {
        kind: {
            "fraction_below_random_median_chi2": s["fraction_below_median_chi2"],
            "fraction_below_random_median_image_error": s["fraction_below_median_image_error"],
            "iterations_to_random_median": s["iterations_to_median"],
        }
        for kind, s in versus.items()
    }


def comparison_json(runs: dict[str, StartRuns], indices) -> dict:
    """The measured part of ``compare_init.json``: {"patterns": [...], "summary": {...}}.

    Per pattern: its test-split ``index``; per start its ``runs``, ``failed`` and final
    ``best_chi2``, ``amplitude_error``, ``phase_rms`` (numbers for the CNN and NNS
    starts; {median, mean, std, p16, p84, finite} over the R runs for a random start);
    ``cnn_iterations_to_random_median`` {random kind: 1-based iteration or None}. The
    summary holds, per random kind, the CNN fractions and ``iterations_to_random_median``
    {median, nulls}, and ``by_start`` the same for every guess start that ran
    ({start: {random kind: {fractions, iterations}}}); NaN is written as null.
    """
    versus = _versus_random(runs)
    patterns = []
    for i, index in enumerate(np.asarray(indices).tolist()):
        starts = {name: _start_record(r, i) for name, r in runs.items()}
        reach = {kind: s["iterations"][i] for kind, s in versus.items()}
        patterns.append(
            {"index": index, "starts": starts, "cnn_iterations_to_random_median": reach}
        )
    summary = {
        "patterns": len(patterns),
        "repeats": runs["random-rectangle"].repeats,
        "starts": list(runs),
        "fraction_cnn_below_random_median_chi2": {
            k: s["fraction_below_median_chi2"] for k, s in versus.items()
        },
        "fraction_cnn_below_random_median_image_error": {
            k: s["fraction_below_median_image_error"] for k, s in versus.items()
        },
        "iterations_to_random_median": {k: s["iterations_to_median"] for k, s in versus.items()},
        "failed_runs": {name: int(r.failed.sum()) for name, r in runs.items()},
        # a looser support fits better: chi^2 comparisons need like supports
        "median_support_pixels": {
            name: float(np.median(r.support_pixels)) for name, r in runs.items()
        },
        # every guess start (CNN, CNN + gradient steps, NNS) scored the same way
        "by_start": {
            name: _guess_summary(_versus_random(runs, name)) for name in GUESS_KINDS if name in runs
        },
    }
    return {"patterns": patterns, "summary": summary}


def comparison_arrays(runs: dict[str, StartRuns], indices) -> dict[str, np.ndarray]:
    """Every run's numbers and the curves, for ``numpy.savez``; keys ``<start>.<field>``.

    Fields: ``best_chi2``, ``amplitude_error``, ``phase_rms``, ``support_pixels`` (N, R),
    ``failed`` (N,),
    ``example_chi2`` (R, n_iter), and ``chi2_band`` (N, 3, n_iter) for a random start
    or ``chi2`` (N, n_iter) for the CNN and NNS starts; ``indices`` (N,) test rows.
    """
    out = {"indices": np.asarray(indices, dtype=np.int64)}
    for name, r in runs.items():
        fields = ("best_chi2", "amplitude_error", "phase_rms", "failed", "support_pixels")
        for field in (*fields, "example_chi2"):
            out[f"{name}.{field}"] = np.asarray(getattr(r, field))
        if name in RANDOM_KINDS:
            out[f"{name}.chi2_band"] = r.chi2_band
        else:
            out[f"{name}.chi2"] = r.chi2_curve
    return out
