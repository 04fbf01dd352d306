"""``cdiflow compare-init``: refinement from the four starts of the paper's Fig. 5(f).

Refines test patterns with the paper's 600-iteration ER/HIO switch schedule and
shrink-wrap from: random phase + rectangle support and random phase + CNN support (each
``--repeats`` times), CNN phase + support, and NNS phase + support (when ``--train``
gives the reference set).

One pattern (``--index``, the default form): ``compare_init.json`` holds a table of final
chi^2 (mean +- std) and image errors after alignment, and the curves; ``chi2_curves.png``
(Fig. 5f) and ``evolution.png`` (Fig. 6, phases unwrapped with skimage's Herraez 2002).

Many patterns (``--patterns N``: the first N test patterns, batched, at most
``--batch-size`` runs per refinement call; needs a CNN; each start refined with its own
default settings, the paper's for random phases and the gentle schedule of
``cdiflow.phasing.settings`` for the CNN and NNS guesses, unless ``--schedule`` sets one
for all): ``compare_init.json`` holds per
pattern the final chi^2 and aligned image errors of each start (median, mean, std, 16/84%
over the R runs of a random start) and the iteration at which the CNN start's chi^2 curve
first reaches each random start's median final chi^2, plus a ``summary`` (fractions of
patterns where the CNN start ends below the random median, the median iteration, the
settings); ``compare_init_runs.npz`` every run's numbers and the curves;
``chi2_curves.png`` (Fig. 5f for the first pattern: median and 16-84% band),
``final_chi2.png`` (box plot per start) and ``cnn_vs_random.png`` (scatter per pattern).

The CNN prediction comes from ``--predictions`` (an .npz with ``amplitude`` and ``phase``
target arrays, row i for test pattern i) or from ``--model`` (``models:/cdiflow-cnn@champion``
resolved in ``--workspace`` or ``MLFLOW_TRACKING_URI``, or a weights file); the library takes
any ``predict(modulus) -> (amplitude, phase_target)``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from cdiflow.commands.common import add_model, add_workspace
from cdiflow.errors import InputError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "compare-init",
        help="iterative refinement from random, CNN and NNS starts (Fig. 5f, Fig. 6)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--data", required=True, help="test split folder (or data set root)")
    add_model(parser, when_omitted="no CNN start unless --predictions")
    add_workspace(parser)
    parser.add_argument("--predictions", default=None, help=".npz of CNN amplitude, phase")
    parser.add_argument("--train", default=None, help="training split for the NNS start")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--index", type=int, default=None, help="which test pattern (default 0)")
    which.add_argument(
        "--patterns", type=int, default=None, help="compare on the first N test patterns"
    )
    parser.add_argument(
        "--batch-size", type=int, default=2048, help="most runs per refinement call (--patterns)"
    )
    parser.add_argument("--repeats", type=int, default=300, help="runs per random start")
    parser.add_argument("--threshold", type=float, default=0.1, help="CNN support threshold")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random phases")
    parser.add_argument(
        "--schedule",
        default=None,
        help="one phasing schedule for every start (default: the paper's for --index; with "
        "--patterns, the paper's for random starts and the gentle 220-iteration one for "
        "CNN and NNS starts)",
    )
    parser.add_argument(
        "--gradient",
        action="store_true",
        help="with --patterns, also refine the CNN start by the gentle schedule then 100 "
        "gradient (Adam) steps through the forward model: start 'cnn-gradient'",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="compare-init-results", help="output folder")
    parser.set_defaults(run=run)
    return parser


def _load_npz(path, count: int) -> tuple:
    """(amplitude, phase) target rows 0..count-1 of a predictions .npz."""
    import numpy as np

    try:
        pred = np.load(path)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: cannot read predictions ({exc})") from None
    if "amplitude" not in pred or "phase" not in pred:
        raise InputError(f"{path}: needs arrays 'amplitude' and 'phase'")
    if len(pred["amplitude"]) < count or len(pred["phase"]) < count:
        raise InputError(f"{path}: fewer than {count} rows of predictions")
    return pred["amplitude"][:count], pred["phase"][:count]


def load_predictor(args):
    """A ``predict(modulus) -> (amplitude, phase_target)`` for the pattern ``args.index``."""
    if args.predictions:
        amplitude, phase = _load_npz(args.predictions, args.index + 1)
        row = (amplitude[args.index], phase[args.index])
        return lambda modulus: row
    if args.model:
        from cdiflow.pipelines.evaluate import load_predictions

        def predict(modulus):
            amplitude, phase = load_predictions(args.model, args.workspace, modulus[None])
            return amplitude[0], phase[0]

        return predict
    return None


def run(args) -> int:
    if args.patterns is not None:
        return run_patterns(args)
    args.index = 0 if args.index is None else args.index
    return run_single(args)


def run_single(args) -> int:
    """The single-pattern form (``--index``)."""
    import numpy as np

    from cdiflow.phasing.compare import compare_starts
    from cdiflow.phasing.nns import read_patterns
    from cdiflow.reports.phasing import plot_chi2_curves, plot_evolution_panel

    if args.repeats < 1:
        raise InputError(f"--repeats must be >= 1, got {args.repeats}")
    modulus, amplitude, phase = read_patterns(args.data, args.index + 1, split="test")
    if len(modulus) <= args.index:
        raise InputError(f"{args.data}: only {len(modulus)} test patterns, no --index {args.index}")
    m, amp, ph = modulus[args.index], amplitude[args.index], phase[args.index]
    predict = load_predictor(args)
    predicted = predict(m) if predict is not None else None
    match = _nearest(args, m[None])
    nearest = None if match is None else (match[0][0], match[1][0])
    schedule = _schedule(args)
    n = len(schedule)
    common = _start_settings(args, predicted, nearest, schedule)
    runs = compare_starts(m, amp, ph, rng=args.seed, snapshots=(n // 30, n // 6, n), **common)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = [r.summary() for r in runs.values()]
    curves = {
        name: {"mean": r.chi2.mean(0).tolist(), "std": r.chi2.std(0).tolist()}
        for name, r in runs.items()
    }
    result = {
        "index": args.index,
        "repeats": args.repeats,
        "seed": args.seed,
        "table": table,
        "curves": curves,
    }
    (out / "compare_init.json").write_text(json.dumps(result, indent=1))
    plot_chi2_curves(runs, out / "chi2_curves.png")
    plot_evolution_panel(runs, out / "evolution.png")
    _print_table(table)
    print(f"wrote {out / 'compare_init.json'}, chi2_curves.png, evolution.png")
    if not np.isfinite([r["final_chi2_mean"] for r in table]).all():
        return 1
    return 0


def _print_table(table: list[dict]) -> None:
    print(f"{'start':<22}{'runs':>6}{'final chi2':>14}{'+-':>10}{'amp err':>10}{'phase rms':>11}")
    for row in table:
        print(
            f"{row['start']:<22}{row['runs']:>6}{row['final_chi2_mean']:>14.4g}"
            f"{row['final_chi2_std']:>10.2g}{row['amplitude_error_mean']:>10.3g}"
            f"{row['phase_rms_mean']:>11.3g}"
        )


def _batch_inputs(args):
    """Test patterns, CNN predictions and NNS matches of the first ``--patterns``."""
    from cdiflow.phasing.nns import read_patterns

    for flag, value in (("--patterns", args.patterns), ("--repeats", args.repeats)):
        if value < 1:
            raise InputError(f"{flag} must be >= 1, got {value}")
    if args.batch_size < 1:
        raise InputError(f"--batch-size must be >= 1, got {args.batch_size}")
    if not (args.predictions or args.model):
        raise InputError("--patterns compares the CNN start: give --model or --predictions")
    modulus, amplitude, phase = read_patterns(args.data, args.patterns, split="test")
    if len(modulus) < args.patterns:
        raise InputError(f"{args.data}: only {len(modulus)} test patterns, not {args.patterns}")
    if args.predictions:
        predicted = _load_npz(args.predictions, args.patterns)
    else:
        from cdiflow.pipelines.evaluate import load_predictions

        predicted = load_predictions(args.model, args.workspace, modulus)
    return (modulus, amplitude, phase), predicted, _nearest(args, modulus)


def _nearest(args, modulus):
    """(amplitudes, phases) of each pattern's nearest ``--train`` neighbour, or None."""
    from cdiflow.phasing.nns import ReferenceSet

    if not args.train:
        return None
    match = ReferenceSet.from_parquet(args.train).search(modulus)
    return match.amplitude, match.phase


def _schedule(args):
    """``--schedule`` parsed, or the paper's schedule."""
    from cdiflow.phasing.schedule import PAPER_SCHEDULE, parse

    return parse(args.schedule) if args.schedule else PAPER_SCHEDULE


def _start_settings(args, predicted, nearest, schedule) -> dict:
    """What both forms pass to their comparison: the starts and how each is refined."""
    return {
        "predicted": predicted,
        "nearest": nearest,
        "repeats": args.repeats,
        "schedule": schedule,
        "threshold": args.threshold,
        "device": args.device,
    }


def _settings(args, schedule, shrinkwrap, kinds) -> dict:
    """What the batched comparison ran with (``summary`` of compare_init.json).

    ``start_settings`` gives each start kind's schedule, beta and shrink-wrap: one for all
    with ``--schedule``, else each kind's default (``cdiflow.phasing.settings``).
    """
    from cdiflow.phasing.settings import PAPER_SETTINGS, RefineSettings, settings_for

    if schedule is None:
        per_kind = {kind: settings_for(kind) for kind in kinds}
    else:
        one = RefineSettings(str(schedule), PAPER_SETTINGS.beta, shrinkwrap)
        per_kind = dict.fromkeys(kinds, one)
    return {
        "schedule": None if schedule is None else str(schedule),
        "iterations": {kind: s.iterations for kind, s in per_kind.items()},
        "start_settings": {kind: s.to_dict() for kind, s in per_kind.items()},
        "model": args.model,
        "predictions": args.predictions,
        "train": args.train,
        "threshold": args.threshold,
        "seed": args.seed,
        "batch_size": args.batch_size,
        "device": args.device,
    }


def _plots(runs, out) -> list:
    from cdiflow.phasing.compare_batch import RANDOM_KINDS
    from cdiflow.phasing.compare_summary import row_median
    from cdiflow.reports.phasing import (
        plot_chi2_curves,
        plot_cnn_vs_random,
        plot_final_chi2_distributions,
    )

    example = {name: r.example_chi2 for name, r in runs.items()}
    medians = {k: row_median(runs[k].best_chi2) for k in RANDOM_KINDS if k in runs}
    return [
        plot_chi2_curves(example, out / "chi2_curves.png", band="percentile"),
        plot_final_chi2_distributions(
            {name: r.best_chi2 for name, r in runs.items()}, out / "final_chi2.png"
        ),
        plot_cnn_vs_random(runs["cnn"].best_chi2[:, 0], medians, out / "cnn_vs_random.png"),
    ]


def run_patterns(args) -> int:
    """The batched form (``--patterns N``)."""
    import numpy as np

    from cdiflow.phasing.compare_batch import compare_patterns
    from cdiflow.phasing.compare_summary import comparison_arrays, comparison_json
    from cdiflow.phasing.refine import PAPER_SHRINKWRAP
    from cdiflow.phasing.schedule import parse

    (modulus, amplitude, phase), predicted, nearest = _batch_inputs(args)
    indices = np.arange(len(modulus))
    # Without --schedule each start gets the refinement the beamtime job gives it: the
    # paper's for random phases, the gentle schedule for the CNN and NNS guesses.
    schedule = parse(args.schedule) if args.schedule else None
    runs = compare_patterns(
        modulus,
        amplitude,
        phase,
        seed=args.seed,
        shrinkwrap=PAPER_SHRINKWRAP,
        batch_size=args.batch_size,
        indices=indices,
        gradient=args.gradient,
        **_start_settings(args, predicted, nearest, schedule),
    )
    result = comparison_json(runs, indices)
    result["summary"].update(_settings(args, schedule, PAPER_SHRINKWRAP, list(runs)))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare_init.json").write_text(json.dumps(result, indent=1, allow_nan=False))
    np.savez_compressed(out / "compare_init_runs.npz", **comparison_arrays(runs, indices))
    figures = _plots(runs, out)
    _print_summary(runs, result["summary"])
    print(
        f"wrote {out / 'compare_init.json'}, compare_init_runs.npz, "
        + ", ".join(f.name for f in figures)
    )
    return 0 if all(np.isfinite(r.best_chi2).all() for r in runs.values()) else 1


def _print_summary(runs, summary) -> None:

    from cdiflow.phasing.compare_summary import row_median

    n, r = summary["patterns"], summary["repeats"]
    print(f"{n} patterns, {r} runs per random start")
    print(f"{'start':<22}{'median final chi2':>19}{'failed runs':>13}")
    for name, runs_ in runs.items():
        median = row_median(row_median(runs_.best_chi2)[None])[0]
        print(f"{name:<22}{median:>19.4g}{summary['failed_runs'][name]:>13}")
    for kind, fraction in summary["fraction_cnn_below_random_median_chi2"].items():
        reach = summary["iterations_to_random_median"][kind]
        share = "no" if fraction is None else f"{fraction:.0%} of"
        print(
            f"CNN below the {kind} median chi2 on {share} patterns; "
            f"reaches it at iteration {reach['median']} (median; never on {reach['nulls']})"
        )
