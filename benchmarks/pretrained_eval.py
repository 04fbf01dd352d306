"""The shipped model on held-out data: Gamma-fit chi^2, NNS against the CNN, CPU inference.

Everything in one process, from inputs anyone can regenerate:

- test set: indices 0 .. ``--patterns``-1 of the paper's generator at ``--seed`` (the
  training script draws training patterns from index 10**7 and validation from 1000 up,
  so these were never trained on); per-pattern chi^2 (modulus, amplitude, phase, and the
  twin-aware amplitude and phase) with Gamma fits, as ``cdiflow evaluate`` computes them;
- NNS: ``--references`` training patterns (indices 10**7 ..) searched for the first
  ``--nns-queries`` test patterns; both reconstructors are scored by the one
  ``cdiflow.reconstruction`` path (modulus chi^2, scale fitted);
- CPU inference: patterns/s of the inference-optimised model at the package's CPU batch
  and at 256, as a fraction of this machine's fp32 matmul rate, the two taking turns in
  the same run;
- symmetry averaging: the same test set through ``cdiflow.models.symmetry``'s
  ``SymmetryAveraged`` (the network asked about the pattern's eight flips and
  transposes, its answers aligned and averaged), and its time against the plain copy's;
- figures: chi^2 histograms (paper Fig. 3) and sample panels (Fig. 4).

    PYTHONPATH=platform python benchmarks/pretrained_eval.py            # ~4 min, 2 cores
    PYTHONPATH=platform python benchmarks/pretrained_eval.py --smoke --out /tmp/p.json
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "platform"))
sys.path.insert(0, str(HERE))

from cdiflow.formats.atomic import atomic_write_json  # noqa: E402
from cdiflow.models import count_flops, inference_batch, inference_model, load_weights  # noqa: E402,E501
from cdiflow.models.reconstructor import CNNReconstructor  # noqa: E402
from cdiflow.models.symmetry import SYMMETRIES, SymmetryAveraged  # noqa: E402
from cdiflow.phasing.nns import NNSReconstructor, ReferenceSet  # noqa: E402
from cdiflow.physics.farfield import PAPER  # noqa: E402
from cdiflow.physics.generator import GeneratorConfig  # noqa: E402
from cdiflow.pipelines.evaluate import ERROR_KINDS, gamma_fit, pattern_errors  # noqa: E402
from cdiflow.train.data import generate_tensors  # noqa: E402
from cnn_inference import best_time, taking_turns  # noqa: E402
from run_record import run_record  # noqa: E402

TRAIN_START = 10**7
DEFAULT_WEIGHTS = ROOT / "platform" / "cdiflow" / "pretrained" / "cnn.pt"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="weights file (.pt)")
    p.add_argument("--patterns", type=int, default=1000, help="held-out test patterns")
    p.add_argument("--seed", type=int, default=0, help="generator seed of the data set")
    p.add_argument("--references", type=int, default=150_000, help="NNS training patterns")
    p.add_argument("--nns-queries", type=int, default=300)
    p.add_argument("--workers", type=int, default=2, help="generator processes")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all)")
    p.add_argument("--out", default=str(HERE / "results" / "pretrained.json"))
    p.add_argument("--figures", default=str(ROOT / "docs" / "images"), help="PNG folder")
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    args = p.parse_args(argv)
    if args.smoke:
        args.patterns, args.references, args.nns_queries, args.workers = 24, 64, 8, 0
    return args


def provenance(args, weights: Path) -> dict:
    return {
        **run_record("pretrained_eval.py"),
        "weights": str(weights.relative_to(ROOT)) if weights.is_relative_to(ROOT) else weights.name,
        "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
        # paths are left out: the weights are named above relative to the repository
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "figures", "weights")},
    }


def nns_against_cnn(cnn, args, test) -> dict:
    """Modulus chi^2 of the CNN and of NNS on the same queries, through one scoring path."""
    refs = generate_tensors(
        GeneratorConfig(),
        args.seed,
        range(TRAIN_START, TRAIN_START + args.references),
        workers=args.workers,
    )
    index = ReferenceSet.from_arrays(refs["modulus"], refs["amplitude"], refs["phase"])
    del refs
    queries = test["modulus"][: args.nns_queries]
    t0 = time.perf_counter()
    nns = NNSReconstructor(index).reconstruct(queries, None, PAPER)
    nns_s = (time.perf_counter() - t0) / len(queries)
    t0 = time.perf_counter()
    ours = cnn.reconstruct(queries, None, PAPER)
    cnn_s = (time.perf_counter() - t0) / len(queries)
    fits = {
        "cnn": gamma_fit(ours.final_chi2.double().numpy()),
        "nns": gamma_fit(nns.final_chi2.double().numpy()),
    }
    return {
        "references": args.references,
        "queries": len(queries),
        "modulus_chi2": fits,
        "nns_over_cnn_gamma_mean": fits["nns"]["mean"] / fits["cnn"]["mean"],
        "seconds_per_pattern": {"cnn": cnn_s, "nns": nns_s},
    }


def inference_share(model, rounds: int = 8) -> dict:
    """Patterns/s and the achieved share of the fp32 matmul rate, the model and the matmul
    taking turns (``cnn_inference.taking_turns``, the one way both scripts measure it): at
    the package's CPU batch (the row's figures) and at 256 (``by_batch``)."""
    fast, flops = inference_model(model), count_flops(model)
    runs = [taking_turns(fast, flops, b, rounds) for b in (inference_batch("cpu"), 256)]
    return {**runs[0], "gflop_per_pattern": flops / 1e9, "by_batch": runs}


def symmetry_averaged(model, arrays, rounds: int = 8) -> dict:
    """The same test patterns through ``SymmetryAveraged`` (all of D4), and its cost: the
    plain inference copy and the averaged one taking turns at the package's CPU batch,
    best of ``rounds`` turns each."""
    count = len(SYMMETRIES)
    errors = pattern_errors(SymmetryAveraged(model, count), arrays)
    fast = inference_model(model)
    averaged = SymmetryAveraged(fast, count)
    batch = inference_batch("cpu")
    x = torch.rand(batch, 64, 64, generator=torch.Generator().manual_seed(1))
    plain_s = averaged_s = float("inf")
    with torch.inference_mode():
        for _ in range(rounds):
            plain_s = min(plain_s, best_time(lambda: fast(x), 1))
            averaged_s = min(averaged_s, best_time(lambda: averaged(x), 1))
    return {
        "count": count,
        "gamma_fits": {kind: gamma_fit(errors[kind]) for kind in ERROR_KINDS},
        "batch": batch,
        "patterns_per_s": {"plain": batch / plain_s, "averaged": batch / averaged_s},
        "cost_ratio": averaged_s / plain_s,
    }


def figures(errors, fits, test, prediction, folder: Path) -> list[str]:
    from cdiflow.reports.evaluation import chi2_histograms, sample_panel

    folder.mkdir(parents=True, exist_ok=True)
    hist = folder / "pretrained_chi2_histograms.png"
    panel = folder / "pretrained_samples.png"
    chi2_histograms(errors, fits, hist)
    shown = slice(0, 6)
    sample_panel(
        test["modulus"][shown].numpy(),
        test["amplitude"][shown].numpy(),
        test["phase"][shown].numpy(),
        prediction[shown].numpy(),
        panel,
    )
    return [str(p.relative_to(ROOT)) if p.is_relative_to(ROOT) else str(p) for p in (hist, panel)]


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    weights = Path(args.weights).resolve()
    model, config, metadata = load_weights(weights)
    result = {"provenance": provenance(args, weights), "model_config": config.to_dict()}
    result["weights_metadata"] = metadata
    t0 = time.perf_counter()
    test = generate_tensors(GeneratorConfig(), args.seed, range(args.patterns), args.workers)
    arrays = {k: v.numpy() for k, v in test.items()}
    errors = pattern_errors(model, arrays)
    fits = {kind: gamma_fit(errors[kind]) for kind in ERROR_KINDS}
    result["test"] = {"patterns": args.patterns, "gamma_fits": fits}
    result["symmetry_averaged"] = symmetry_averaged(model, arrays)
    cnn = CNNReconstructor(model, device="cpu")
    prediction = cnn.predict(test["modulus"][:6])
    result["figures"] = figures(errors, fits, test, prediction, Path(args.figures))
    result["nns"] = nns_against_cnn(cnn, args, test)
    result["inference"] = inference_share(model)
    result["seconds"] = time.perf_counter() - t0
    result["provenance"]["load_after"] = list(os.getloadavg())
    atomic_write_json(args.out, result)
    means = {k: round(v["mean"], 4) for k, v in fits.items()}
    print(f"Gamma-fit mean chi^2 on {args.patterns} held-out patterns: {means}")
    sym = result["symmetry_averaged"]
    sym_means = {k: round(v["mean"], 4) for k, v in sym["gamma_fits"].items()}
    print(f"{sym['count']}-fold symmetry averaging, {sym['cost_ratio']:.1f}x the time: {sym_means}")
    print(
        f"NNS / CNN modulus chi^2: {result['nns']['nns_over_cnn_gamma_mean']:.2f}x; inference "
        f"{result['inference']['patterns_per_s']:.0f} patterns/s = "
        f"{100 * result['inference']['fraction_of_matmul']:.0f}% of the matmul rate"
    )
    return result


if __name__ == "__main__":
    main()
