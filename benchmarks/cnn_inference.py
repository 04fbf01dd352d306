"""CPU inference speed of the CNN, as a ratio to this machine's fp32 matmul rate.

Measures, in one process, the inference copy (``inference_model``: BN folded,
channels_last, eval) of each width and of the shipped model
(``platform/cdiflow/pretrained/cnn.pt``), at the batch the package runs on CPU
(``inference_batch``, 32) and at 256: patterns/s and the achieved GFLOP/s (conv FLOPs
from ``count_flops``), each against the fp32 matmul rate (torch.mm of 2048 x 2048
matrices). The model and the matmul take turns, ``--rounds`` times, and the share is the
best model rate over the best matmul rate: the shared machine's speed swings by half
within minutes, so a matmul measured once before and once after is no baseline.

    PYTHONPATH=platform:benchmarks python benchmarks/cnn_inference.py [--widths 8 16 24]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from cdiflow import pretrained
from cdiflow.formats.atomic import atomic_write_json
from cdiflow.models import (
    ModelConfig,
    build_model,
    count_flops,
    count_parameters,
    inference_batch,
    inference_model,
    load_weights,
)
from run_record import run_record


def best_time(fn, repeats: int) -> float:
    """Best wall time of ``repeats`` calls after one warm-up (least disturbed by load)."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen)
    b = torch.randn(n, n, generator=gen)
    return 2 * n**3 / best_time(lambda: torch.mm(a, b), repeats) / 1e9


@torch.inference_mode()
def taking_turns(fast, flops: int, batch: int, rounds: int) -> dict:
    """patterns/s of the inference copy ``fast`` (``flops`` per pattern) at ``batch`` and
    the matmul rate, best of ``rounds`` turns each (one matmul, then the model)."""
    x = torch.rand(batch, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    x = x.contiguous(memory_format=torch.channels_last)
    model_s, matmul = best_time(lambda: fast(x), 1), 0.0
    for _ in range(rounds):
        matmul = max(matmul, matmul_gflops(repeats=1))
        model_s = min(model_s, best_time(lambda: fast(x), 1))
    achieved = flops * batch / model_s / 1e9
    return {
        "batch": batch,
        "patterns_per_s": batch / model_s,
        "gflops_achieved": achieved,
        "matmul_gflops": matmul,
        "fraction_of_matmul": achieved / matmul,
    }


def model_row(model, label: dict, batches: list[int], rounds: int) -> dict:
    """One model: its size, and ``taking_turns`` at each batch (the first is the row's)."""
    fast, flops = inference_model(model.eval()), count_flops(model)
    runs = [taking_turns(fast, flops, b, rounds) for b in batches]
    first = runs[0]
    row = {
        **label,
        "gflop_per_pattern": flops / 1e9,
        "parameters": count_parameters(model),
        "patterns_per_s": first["patterns_per_s"],
        "gflops_achieved": first["gflops_achieved"],
        "matmul_gflops": first["matmul_gflops"],  # the best of the turns
        "fraction_of_matmul": first["fraction_of_matmul"],
        "by_batch": runs,
    }
    shares = ", ".join(f"batch {r['batch']} {r['fraction_of_matmul']:.0%}" for r in runs)
    print(
        f"{label}: {row['gflop_per_pattern']:.3f} GFLOP/pattern, "
        f"{row['patterns_per_s']:7.0f} patterns/s at batch {batches[0]}; of matmul: {shares}",
        flush=True,
    )
    return row


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 12, 16, 24])
    parser.add_argument("--batch", type=int, default=inference_batch("cpu"))
    parser.add_argument("--also-batch", type=int, default=256, help="a second batch, 0: none")
    parser.add_argument("--rounds", type=int, default=8, help="turns of matmul and model")
    parser.add_argument("--out", default=str(Path(__file__).parent / "results/cnn_inference.json"))
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    batches = [args.batch] + ([args.also_batch] if args.also_batch else [])
    rows = []
    for w in args.widths:
        torch.manual_seed(0)
        model = build_model(ModelConfig(base_width=w))
        rows.append(model_row(model, {"base_width": w}, batches, args.rounds))
    shipped = None
    if pretrained.available():
        model, config, _meta = load_weights(pretrained.WEIGHTS)
        label = {"base_width": config.base_width, "weights": "pretrained/cnn.pt"}
        shipped = model_row(model, label, batches, args.rounds)
    result = {
        **run_record("cnn_inference.py", load_before),
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "rounds": args.rounds,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "models": rows,
        "shipped": shipped,
    }
    print(f"load {os.getloadavg()}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result, indent=2)


if __name__ == "__main__":
    main()
