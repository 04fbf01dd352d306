"""CNN-seeded refinement at scale: does a CNN start keep its lead, and how much sooner?

On ``--patterns`` held-out patterns of the paper's generator (indices 0.., never trained
on), with the shipped model, in one process:

- the four starts of Fig. 5(f) through ``compare_patterns``, each with its default
  settings (``cdiflow.phasing.settings``): the random starts ``--repeats`` times with
  the paper's 600 iterations, the CNN start with ``SEEDED_SETTINGS`` (the guess and
  four random-phase copies in its support, 99 gentle iterations each, then 60 ER for
  the one of least chi^2: 555 iterations of work);
- variants of the CNN start's refinement, scored against the same random runs: the
  paper's schedule, the gentle 120 iterations alone (``gentle-120``), the guess alone
  with 120 gentle iterations and 100 ER in a frozen support (``gentle``, the default
  before candidates), the gentle 120 followed by 100 gradient (ADAM) steps, HIO/ER
  cycles in the support frozen after iteration 120, the same with shrink-wrap on to
  240, the default (``candidates``) and the same with ten candidates (``candidates-10``,
  1,050 iterations of work); each with its iterations of work and the median
  size of its answers' supports, since chi^2 falls as a support loosens (the summary's
  ``median_support_pixels`` holds the four starts');
- time per pattern of random start + 600 iterations against CNN start + its schedule
  (batched, same batch size), and the ratio at equal chi^2: the random start's 600
  iterations against the iterations of work the CNN start needs to reach the random
  starts' median final chi^2 (iterations cost the same in both; with candidates, every
  candidate's iterations count until the winner reaches it).

    PYTHONPATH=platform python benchmarks/seeded_refinement.py          # ~5 min, 2 cores
    PYTHONPATH=platform python benchmarks/seeded_refinement.py --smoke --out /tmp/s.json
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "platform"))

from cdiflow.formats.atomic import atomic_write_json  # noqa: E402
from cdiflow.models import load_weights  # noqa: E402
from cdiflow.models.reconstructor import CNNReconstructor  # noqa: E402
from cdiflow.phasing.candidates import refine_settings  # noqa: E402
from cdiflow.phasing.compare import image_errors, truth_object  # noqa: E402
from cdiflow.phasing.compare_batch import compare_patterns, pattern_generator  # noqa: E402
from cdiflow.phasing.compare_summary import (  # noqa: E402
    comparison_json,
    fraction_below,
    row_median,
    summarise,
)
from cdiflow.phasing.settings import (  # noqa: E402
    GENTLE_SETTINGS,
    GRADIENT_SETTINGS,
    PAPER_SETTINGS,
    SEEDED_SETTINGS,
    RefineSettings,
    settings_for,
)
from cdiflow.phasing.shrinkwrap import ShrinkWrap  # noqa: E402
from cdiflow.phasing.starts import cnn_start, random_phase_rectangle  # noqa: E402
from cdiflow.physics.generator import GeneratorConfig  # noqa: E402
from cdiflow.train.data import generate_tensors  # noqa: E402
from run_record import run_record  # noqa: E402

DEFAULT_WEIGHTS = ROOT / "platform" / "cdiflow" / "pretrained" / "cnn.pt"

VARIANTS = {
    "paper": PAPER_SETTINGS,
    "gentle-120": RefineSettings("2*(40*HIO+20*ER)", 0.5, ShrinkWrap(start=20)),
    "gentle": GENTLE_SETTINGS,
    "gentle+adam": GRADIENT_SETTINGS,
    # HIO/ER cycles at beta 0.9 in the support frozen after iteration 120
    "gentle+frozen-hio": RefineSettings(
        "2*(40*HIO+20*ER)+2*(80*HIO+20*ER)+100*ER", 0.9, ShrinkWrap(start=20, stop=120)
    ),
    # the same with shrink-wrap on to iteration 240: its supports loosen during HIO, so
    # it wins on chi^2 without winning on image error (the support sizes say why)
    "gentle+late-freeze": RefineSettings(
        "2*(40*HIO+20*ER)+2*(80*HIO+20*ER)+100*ER", 0.9, ShrinkWrap(start=20, stop=240)
    ),
    "candidates": SEEDED_SETTINGS,
    # twice the candidates: more than one random start's work (1,050 iterations)
    "candidates-10": SEEDED_SETTINGS.replace(candidates=10),
}
"""Refinements of the CNN start compared against the same random runs."""

SMOKE_VARIANTS = {
    "gentle+adam": RefineSettings("6*ER+4*ADAM", 0.5, None),
    "candidates": RefineSettings("6*ER", 0.5, None, candidates=2, tail="3*ER"),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="weights file (.pt)")
    p.add_argument("--patterns", type=int, default=300, help="held-out test patterns")
    p.add_argument("--repeats", type=int, default=5, help="runs of each random start")
    p.add_argument("--seed", type=int, default=0, help="generator and random-start seed")
    p.add_argument("--batch-size", type=int, default=256, help="runs per refine call")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.add_argument("--out", default=str(HERE / "results" / "seeded_refinement.json"))
    p.add_argument("--smoke", action="store_true", help="tiny sizes and schedules, for tests")
    return p.parse_args(argv)


def _smoke_settings(kind: str) -> RefineSettings:
    return (
        RefineSettings("6*ER", 0.5, None)
        if kind in ("cnn", "nns")
        else RefineSettings("12*HIO+6*ER")
    )


def candidate_rngs(seed: int, count: int) -> list:
    """The candidates' generators of patterns 0..count-1, as ``compare_patterns`` seeds
    the CNN start's."""
    return [pattern_generator(seed, "cnn", i) for i in range(count)]


def variant_scores(variant: RefineSettings, modulus, predicted, truth, random_runs, seed) -> dict:
    """One refinement of the CNN start scored against the random runs of each kind."""
    start = cnn_start(*predicted)
    t0 = time.perf_counter()
    res = refine_settings(modulus, start, variant, candidate_rngs(seed, len(modulus)))
    seconds = time.perf_counter() - t0
    errors = {k: v.numpy() for k, v in image_errors(res.obj, truth).items()}
    errors = {"amplitude_error": errors["amplitude"], "phase_rms": errors["phase_rms"]}
    out = {
        "schedule": variant.schedule,
        "beta": variant.beta,
        "candidates": variant.candidates,
        "tail": variant.tail,
        "iterations_of_work": variant.work,
        "seconds_per_pattern": seconds / len(modulus),
    }
    out["median_best_chi2"] = float(np.nanmedian(res.best_chi2.numpy()))
    out["median_support_pixels"] = float(np.median(res.answer_support().sum((-2, -1)).numpy()))
    for kind, runs in random_runs.items():
        s = summarise(
            res.best_chi2.numpy(), res.chi2.numpy(), errors, runs.best_chi2, runs.errors()
        )
        out[kind] = {
            "fraction_below_random_median_chi2": s["fraction_below_median_chi2"],
            "fraction_below_random_median_image_error": s["fraction_below_median_image_error"],
            "iterations_to_random_median": s["iterations_to_median"],
            "work_to_random_median": work_to(s["iterations_to_median"]["median"], variant),
        }
    return out


def start_diagnosis(predicted, truth, random_runs, refined) -> dict:
    """Where the CNN start loses: its image errors before any refinement, and on which
    patterns the refined CNN start ends above the random median.

    Per random start kind: the fraction of patterns where the unrefined guess is already
    below the random runs' median image error, and, over the patterns the refined CNN
    start loses on amplitude error and over those it wins, the median image errors of the
    unrefined guess (a refinement that moves a guess with the right amplitude and the
    wrong phase leaves it in a wrong basin).
    """
    start = cnn_start(*predicted)
    raw = {k: v.numpy() for k, v in image_errors(start.object, truth).items()}
    raw = {"amplitude_error": raw["amplitude"], "phase_rms": raw["phase_rms"]}
    final = refined.errors()
    out = {"unrefined_median": {k: float(np.median(v)) for k, v in raw.items()}}
    for kind, runs in random_runs.items():
        medians = {k: row_median(v) for k, v in runs.errors().items()}
        mine, median = final["amplitude_error"][:, 0], medians["amplitude_error"]
        scored = np.isfinite(mine) & np.isfinite(median)
        loses, wins = scored & (mine >= median), scored & (mine < median)
        out[kind] = {
            "fraction_unrefined_below_random_median": {
                k: fraction_below(raw[k], medians[k]) for k in raw
            },
            "patterns_refined_loses_amplitude_error": int(loses.sum()),
            "unrefined_median_where_refined_loses": _median_where(raw, loses),
            "unrefined_median_where_refined_wins": _median_where(raw, wins),
        }
    return out


def _median_where(errors: dict, rows: np.ndarray) -> dict:
    return {k: float(np.median(v[rows])) if rows.any() else None for k, v in errors.items()}


def work_to(iterations, settings: RefineSettings):
    """Iterations of work until the winner's curve reaches a chi^2 at ``iterations``
    (``RefineSettings.work_until``); None when it never does."""
    return None if iterations is None else float(settings.work_until(iterations))


def timing(modulus, predicted, batch_size: int, seed: int, smoke: bool) -> dict:
    """Seconds per pattern: random rectangle + the paper's 600 against CNN + its schedule."""
    blind = _smoke_settings("random-rectangle") if smoke else PAPER_SETTINGS
    guess = _smoke_settings("cnn") if smoke else SEEDED_SETTINGS
    n = min(len(modulus), batch_size)
    rand = random_phase_rectangle(n, torch.Generator().manual_seed(seed))
    cnn = cnn_start(predicted[0][:n], predicted[1][:n])
    out = {}
    for name, start, s in (("random_600", rand, blind), ("cnn_seeded", cnn, guess)):
        t0 = time.perf_counter()
        refine_settings(modulus[:n], start, s, candidate_rngs(seed, n))
        out[f"{name}_seconds_per_pattern"] = (time.perf_counter() - t0) / n
        out[f"{name}_iterations"] = s.work
    out["speedup_full_runs"] = (
        out["random_600_seconds_per_pattern"] / out["cnn_seeded_seconds_per_pattern"]
    )
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.smoke:
        args.patterns, args.repeats = 6, 2
    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = list(os.getloadavg())
    weights = Path(args.weights)
    model, _config, _meta = load_weights(weights)
    data = generate_tensors(GeneratorConfig(), args.seed, range(args.patterns))
    modulus, amplitude, phase = data["modulus"], data["amplitude"], data["phase"]
    out = CNNReconstructor(model).predict(modulus)
    predicted = (out[:, 0].numpy(), out[:, 1].numpy())
    settings = _smoke_settings if args.smoke else settings_for
    t0 = time.perf_counter()
    runs = compare_patterns(
        modulus.numpy(), amplitude.numpy(), phase.numpy(), predicted, repeats=args.repeats,
        seed=args.seed, settings=settings, batch_size=args.batch_size,
    )  # fmt: skip
    compare_seconds = time.perf_counter() - t0
    truth = truth_object(amplitude.numpy(), phase.numpy())
    random_runs = {k: v for k, v in runs.items() if k.startswith("random")}
    variants = VARIANTS if not args.smoke else SMOKE_VARIANTS
    result = {
        **run_record("seeded_refinement.py", load_before),
        "weights": weights.name,
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "weights")},
        "settings": {kind: settings(kind).to_dict() for kind in runs},
        "compare_seconds": compare_seconds,
        "summary": comparison_json(runs, np.arange(args.patterns))["summary"],
        "cnn_variants": {
            name: variant_scores(v, modulus, predicted, truth, random_runs, args.seed)
            for name, v in variants.items()
        },
        "cnn_start_diagnosis": start_diagnosis(predicted, truth, random_runs, runs["cnn"]),
        "timing": timing(modulus, predicted, args.batch_size, args.seed, args.smoke),
    }
    reach = result["summary"]["iterations_to_random_median"]["random-rectangle"]["median"]
    reach = work_to(reach, settings("cnn"))  # every candidate's iterations count
    blind_iterations = result["timing"]["random_600_iterations"]
    result["work_to_random_median"] = reach
    result["speedup_at_equal_chi2"] = None if not reach else blind_iterations / reach
    result["load_after"] = list(os.getloadavg())
    atomic_write_json(args.out, result, indent=2)
    summary = result["summary"]
    print(
        f"fraction CNN below random median chi2: {summary['fraction_cnn_below_random_median_chi2']}"
    )
    print(f"iterations to random median: {summary['iterations_to_random_median']}")
    print(f"speed-up at equal chi2: {result['speedup_at_equal_chi2']}, timing {result['timing']}")
    return result


if __name__ == "__main__":
    main()
