"""CPU inference speed of the CNN, as a ratio to this machine's fp32 matmul rate.

Measures, in one process: the fp32 matmul rate (torch.mm of large square matrices), then
patterns/s at batch 256 of the inference-optimised model (BN folded, channels_last,
eval) and of the plain eval model, and the achieved GFLOP/s (conv FLOPs from
``count_flops``). Machines here are shared: compare the ratios, and read the load
average written next to them.

    PYTHONPATH=platform python benchmarks/cnn_inference.py [--widths 8 12 16 24]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from cdiflow.formats.atomic import atomic_write_json
from cdiflow.models import ModelConfig, build_model, count_flops, count_parameters, inference_model
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
def model_speed(width: int, batch: int, repeats: int) -> dict:
    torch.manual_seed(0)
    model = build_model(ModelConfig(base_width=width)).eval()
    fast = inference_model(model)
    flops = count_flops(model)
    x = torch.rand(batch, 1, 64, 64, generator=torch.Generator().manual_seed(1))
    x_cl = x.contiguous(memory_format=torch.channels_last)
    t_plain = best_time(lambda: model(x), repeats)
    t_fast = best_time(lambda: fast(x_cl), repeats)
    return {
        "base_width": width,
        "gflop_per_pattern": flops / 1e9,
        "parameters": count_parameters(model),
        "patterns_per_s": batch / t_fast,
        "gflops_achieved": flops * batch / t_fast / 1e9,
        "patterns_per_s_plain_eval": batch / t_plain,
        "speedup_vs_plain_eval": t_plain / t_fast,
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--widths", type=int, nargs="+", default=[8, 12, 16, 24])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default=str(Path(__file__).parent / "results/cnn_inference.json"))
    args = parser.parse_args(argv)
    load_before = os.getloadavg()
    mm = matmul_gflops()
    rows = []
    for w in args.widths:
        # The machine is shared: measure the matmul baseline next to each model.
        row = {"matmul_gflops_before": matmul_gflops()}
        row |= model_speed(w, args.batch, args.repeats)
        row["matmul_gflops_after"] = matmul_gflops()
        baseline = max(row["matmul_gflops_before"], row["matmul_gflops_after"])
        row["fraction_of_matmul"] = row["gflops_achieved"] / baseline
        rows.append(row)
        print(
            f"width {w:3d}: {row['gflop_per_pattern']:.3f} GFLOP/pattern, "
            f"{row['patterns_per_s']:7.0f} patterns/s, {row['gflops_achieved']:5.1f} GFLOP/s "
            f"= {row['fraction_of_matmul']:.0%} of matmul ({baseline:.0f}), "
            f"{row['speedup_vs_plain_eval']:.2f}x vs plain eval",
            flush=True,
        )
    mm_after = matmul_gflops()
    result = {
        **run_record("cnn_inference.py", load_before),
        "batch": args.batch,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "matmul_gflops": mm,
        "matmul_gflops_after": mm_after,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg(),
        "models": rows,
    }
    print(f"fp32 matmul: {mm:.1f} GFLOP/s (after: {mm_after:.1f}); load {os.getloadavg()}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result, indent=2)


if __name__ == "__main__":
    main()
