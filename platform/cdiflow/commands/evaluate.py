"""``cdiflow evaluate``: chi^2 histograms with Gamma fits and sample panels for a model."""

from __future__ import annotations

import argparse

from cdiflow.commands.common import add_model, add_workspace
from cdiflow.formats.location import location_arg


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "evaluate",
        help="evaluate a model on a held-out split: chi^2 histograms, panels, JSON",
        description=(
            "Evaluate a trained CNN on a dataset split (default: test). Writes "
            "chi2_histograms.png (modulus, amplitude, phase, each with a Gamma fit and its "
            "mean; the paper's Fig. 3), samples.png (six inputs with true and predicted "
            "amplitude and phase; Fig. 4) and evaluation.json, and logs them to MLflow."
        ),
    )
    add_model(parser, required=True)
    parser.add_argument(
        "--data",
        required=True,
        type=location_arg,
        help="dataset folder or object-storage URI (s3://bucket/prefix)",
    )
    parser.add_argument("--out", required=True, help="output folder for figures and JSON")
    parser.add_argument("--split", default="test", help="split to evaluate (default: test)")
    parser.add_argument("--limit", type=int, help="evaluate at most this many patterns")
    add_workspace(parser)
    parser.add_argument("--no-log", action="store_true", help="do not log to MLflow")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cdiflow.pipelines.evaluate import evaluate_model
    from cdiflow.pipelines.tracking import configure

    uri = configure(args.workspace)
    summary = evaluate_model(
        args.model,
        args.data,
        args.out,
        uri=uri,
        split=args.split,
        limit=args.limit,
        log=not args.no_log,
    )
    for kind, fit in summary["gamma_fits"].items():
        print(f"{kind:9s} chi2: Gamma mean {fit['mean']:.4g}  median {fit['median']:.4g}")
    print(f"wrote {args.out}/chi2_histograms.png, samples.png, evaluation.json")
    return 0
