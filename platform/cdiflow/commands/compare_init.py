"""``cdiflow compare-init``: refinement from the four starts of the paper's Fig. 5(f).

Refines one test pattern (``--index``) with the paper's 600-iteration ER/HIO switch
schedule and shrink-wrap from: random phase + rectangle support and random phase + CNN
support (each ``--repeats`` times: mean +- std), CNN phase + support, and NNS phase +
support (when ``--train`` gives the reference set). Writes ``compare_init.json`` (a table
of final chi^2 and image errors after alignment, and the curves), ``chi2_curves.png``
(Fig. 5f) and ``evolution.png`` (Fig. 6, phases unwrapped with skimage's Herraez 2002).

The CNN prediction comes from ``--predictions`` (an .npz with ``amplitude`` and ``phase``
target arrays, row i for test pattern i) or from ``--model`` (``models:/cdiflow-cnn@champion``
resolved in ``--workspace`` or ``MLFLOW_TRACKING_URI``, or a weights file); the library takes
any ``predict(modulus) -> (amplitude, phase_target)``.
"""

from __future__ import annotations

import argparse

from cdiflow.commands.common import add_model, add_workspace


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
    parser.add_argument("--index", type=int, default=0, help="which test pattern")
    parser.add_argument("--repeats", type=int, default=300, help="runs per random start")
    parser.add_argument("--threshold", type=float, default=0.1, help="CNN support threshold")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random phases")
    parser.add_argument("--schedule", default=None, help="phasing schedule (default: paper's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default="compare-init-results", help="output folder")
    parser.set_defaults(run=run)
    return parser


def load_predictor(args):
    """A ``predict(modulus) -> (amplitude, phase_target)`` for the pattern ``args.index``."""
    import numpy as np

    from cdiflow.errors import InputError

    if args.predictions:
        pred = np.load(args.predictions)
        if "amplitude" not in pred or "phase" not in pred:
            raise InputError(f"{args.predictions}: needs arrays 'amplitude' and 'phase'")
        row = (pred["amplitude"][args.index], pred["phase"][args.index])
        return lambda modulus: row
    if args.model:
        from cdiflow.pipelines.evaluate import load_predictions

        def predict(modulus):
            amplitude, phase = load_predictions(args.model, args.workspace, modulus[None])
            return amplitude[0], phase[0]

        return predict
    return None


def run(args) -> int:
    import json
    from pathlib import Path

    import numpy as np

    from cdiflow.errors import InputError
    from cdiflow.phasing.compare import compare_starts
    from cdiflow.phasing.nns import ReferenceSet, read_patterns
    from cdiflow.phasing.schedule import PAPER_SCHEDULE, parse
    from cdiflow.reports.phasing import plot_chi2_curves, plot_evolution_panel

    if args.repeats < 1:
        raise InputError(f"--repeats must be >= 1, got {args.repeats}")
    modulus, amplitude, phase = read_patterns(args.data, args.index + 1, split="test")
    if len(modulus) <= args.index:
        raise InputError(f"{args.data}: only {len(modulus)} test patterns, no --index {args.index}")
    m, amp, ph = modulus[args.index], amplitude[args.index], phase[args.index]
    predict = load_predictor(args)
    predicted = predict(m) if predict is not None else None
    nearest = None
    if args.train:
        match = ReferenceSet.from_parquet(args.train).search(m[None])
        nearest = (match.amplitude[0], match.phase[0])
    schedule = parse(args.schedule) if args.schedule else PAPER_SCHEDULE
    n = len(schedule)
    runs = compare_starts(
        m,
        amp,
        ph,
        predicted=predicted,
        nearest=nearest,
        repeats=args.repeats,
        rng=args.seed,
        schedule=schedule,
        threshold=args.threshold,
        device=args.device,
        snapshots=(n // 30, n // 6, n),
    )
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
    print(f"{'start':<22}{'runs':>6}{'final chi2':>14}{'+-':>10}{'amp err':>10}{'phase rms':>11}")
    for row in table:
        print(
            f"{row['start']:<22}{row['runs']:>6}{row['final_chi2_mean']:>14.4g}"
            f"{row['final_chi2_std']:>10.2g}{row['amplitude_error_mean']:>10.3g}"
            f"{row['phase_rms_mean']:>11.3g}"
        )
    print(f"wrote {out / 'compare_init.json'}, chi2_curves.png, evolution.png")
    if not np.isfinite([r["final_chi2_mean"] for r in table]).all():
        return 1
    return 0
