"""``cdiflow nns``: nearest-neighbour search baseline against the CNN (paper section 3.2).

Matches the first ``--count`` test patterns against every training pattern by
normalised correlation (``cdiflow.phasing.nns``), times it per query, and scores the
match by chi^2 (eq. 5, scale fitted) and by image errors after alignment. With
``--predictions`` (an .npz with ``amplitude`` and ``phase`` target arrays for the same
test patterns, e.g. written from the CNN) or ``--model`` (a registry reference or a
weights file) the CNN is scored the same way, and timed per pattern. Writes
``nns.json`` and ``nns_chi2.png`` into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cdiflow.commands.common import add_model, add_workspace
from cdiflow.errors import InputError
from cdiflow.formats.location import location_arg


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "nns",
        help="nearest-neighbour search baseline: chi^2 and time per query vs the CNN",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data",
        required=True,
        type=location_arg,
        help="training split folder (or data set root); a folder or an s3://... URI",
    )
    parser.add_argument(
        "--test",
        required=True,
        type=location_arg,
        help="test split folder (or data set root); a folder or an s3://... URI",
    )
    parser.add_argument("--count", type=int, default=300, help="test patterns (paper: 300)")
    parser.add_argument("--binning", type=int, default=2, help="coarse-pass binning (1: none)")
    parser.add_argument("--k", type=int, default=8, help="candidates re-ranked at full size")
    parser.add_argument("--limit", type=int, default=None, help="use only N references")
    parser.add_argument("--predictions", default=None, help=".npz of CNN amplitude, phase")
    add_model(parser, when_omitted="no CNN unless --predictions")
    add_workspace(parser)
    parser.add_argument("--out", default="nns-results", help="output folder")
    parser.set_defaults(run=run)
    return parser


def _scores(modulus, amplitude, phase, truth_amplitude, truth_phase) -> dict:
    """chi^2 of the object's modulus and image errors against the truth, per pattern."""
    import torch

    from cdiflow.metrics import aligned_errors, chi2
    from cdiflow.phasing.compare import truth_object
    from cdiflow.physics.fft import object_modulus

    obj = truth_object(amplitude, phase)
    c = chi2(object_modulus(obj, modulus.shape[-1]), torch.as_tensor(modulus), fit_scale=True)
    err = aligned_errors(obj, truth_object(truth_amplitude, truth_phase))
    return {
        "chi2": c.numpy(),
        "amplitude_error": err["amplitude"].numpy(),
        "phase_rms": err["phase_rms"].numpy(),
    }


def _summary(scores: dict) -> dict:
    import numpy as np

    return {
        f"{k}_{s}": float(getattr(np, s)(v)) for k, v in scores.items() for s in ("mean", "median")
    }


def run(args) -> int:
    import numpy as np

    from cdiflow.phasing.nns import ReferenceSet, read_patterns
    from cdiflow.reports.phasing import plot_chi2_histogram

    modulus, amplitude, phase = read_patterns(args.test, args.count, split="test")
    t0 = time.perf_counter()
    refs = ReferenceSet.from_parquet(args.data, args.binning, limit=args.limit)
    build = time.perf_counter() - t0
    t0 = time.perf_counter()
    match = refs.search(modulus, k=args.k)
    per_query = (time.perf_counter() - t0) / len(modulus)
    cnn_ms = None
    scores = {"NNS": _scores(modulus, match.amplitude, match.phase, amplitude, phase)}
    if args.predictions:
        pred = np.load(args.predictions)
        if "amplitude" not in pred or "phase" not in pred:
            raise InputError(f"{args.predictions}: needs arrays 'amplitude' and 'phase'")
        n = len(modulus)
        scores["CNN"] = _scores(modulus, pred["amplitude"][:n], pred["phase"][:n], amplitude, phase)
    elif args.model:
        from cdiflow.pipelines.evaluate import load_predictions

        t0 = time.perf_counter()
        cnn_amplitude, cnn_phase = load_predictions(args.model, args.workspace, modulus)
        cnn_ms = 1e3 * (time.perf_counter() - t0) / len(modulus)
        scores["CNN"] = _scores(modulus, cnn_amplitude, cnn_phase, amplitude, phase)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result = {
        "references": len(refs),
        "test_patterns": len(modulus),
        "binning": args.binning,
        "k": args.k,
        "build_seconds": build,
        "ms_per_query": 1e3 * per_query,
        "cnn_ms_per_pattern": cnn_ms,
        "methods": {name: _summary(s) for name, s in scores.items()},
    }
    (out / "nns.json").write_text(json.dumps(result, indent=1))
    plot_chi2_histogram({k: v["chi2"] for k, v in scores.items()}, out / "nns_chi2.png")
    for name, s in result["methods"].items():
        print(f"{name}: mean chi2 {s['chi2_mean']:.4g} over {len(modulus)} test patterns")
    print(
        f"NNS: {result['ms_per_query']:.2f} ms per query against {len(refs)} references; "
        f"wrote {out / 'nns.json'} and {out / 'nns_chi2.png'}"
    )
    return 0
