"""GPU phasing benchmark: the batched engine at B in the thousands (pure torch).

Runs the paper's 600-iteration ER/HIO + shrink-wrap schedule through
``cdiflow.phasing.runner.run_phasing`` on one device and reports patterns/s,
pattern-iterations/s, the FFT-only bound at the same batch size, median chi^2 and peak
memory. Needs only torch and numpy (no Ray, MLflow or skimage), so it runs in a bare GPU
image with ``PYTHONPATH=platform``. ``--smoke`` runs a tiny CPU version (used by the unit
tests).

Usage::

    PYTHONPATH=platform python benchmarks/gpu_phasing.py --batch-sizes 1024,4096,16384
    PYTHONPATH=platform python benchmarks/gpu_phasing.py --smoke
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "platform"))

from cdiflow.formats.atomic import atomic_write_json  # noqa: E402
from cdiflow.phasing.runner import run_phasing  # noqa: E402
from cdiflow.phasing.schedule import PAPER_SCHEDULE, parse  # noqa: E402
from cdiflow.phasing.shrinkwrap import ShrinkWrap, square_support  # noqa: E402
from cdiflow.physics.fft import centred_fft2, normalise_modulus, pad_centre  # noqa: E402


def synthetic_patterns(batch: int, device, seed: int = 0) -> torch.Tensor:
    """(B, 64, 64) float32 moduli of random ellipses with smooth strong phase (on device).

    Made directly on the device so that B in the tens of thousands costs nothing; the
    engine's speed does not depend on the content.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    r = torch.arange(32, dtype=torch.float32) - 16
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    p = torch.rand(batch, 6, generator=g)
    a, b = 5 + 6 * p[:, 0, None, None], 5 + 6 * p[:, 1, None, None]
    amp = ((yy / a) ** 2 + (xx / b) ** 2 < 1).float()
    phase = math.pi * torch.sin(yy * p[:, 2, None, None] / 3 + xx * p[:, 3, None, None] / 3)
    obj = pad_centre(torch.polar(amp, phase), 64).to(device)
    return normalise_modulus(centred_fft2(obj).abs())


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def fft_bound(x: torch.Tensor, iterations: int) -> float:
    """Pattern-iterations/s of the two FFTs alone at this batch size."""
    y = x
    sync(x.device)
    t0 = time.perf_counter()
    for _ in range(iterations):
        y = torch.fft.ifft2(torch.fft.fft2(y, norm="ortho"), norm="ortho")
    sync(x.device)
    return x.shape[0] * iterations / (time.perf_counter() - t0)


def bench(batch: int, device, schedule, shrinkwrap) -> dict:
    modulus = synthetic_patterns(batch, device)
    g = torch.Generator(device="cpu").manual_seed(1)
    start = torch.polar(
        torch.ones(batch, 64, 64), 2 * math.pi * torch.rand(batch, 64, 64, generator=g)
    )
    start = start.to(device)
    upper = square_support(64, 32, device=device)
    run_phasing(modulus, start, upper, "5*HIO+5*ER", upper_bound=upper)  # warm-up
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0 = time.perf_counter()
    res = run_phasing(modulus, start, upper, schedule, shrinkwrap=shrinkwrap, upper_bound=upper)
    sync(device)
    seconds = time.perf_counter() - t0
    n_iter = len(schedule)
    out = {
        "batch": batch,
        "iterations": n_iter,
        "seconds": seconds,
        "patterns_per_s": batch / seconds,
        "pattern_iterations_per_s": batch * n_iter / seconds,
        "fft_only_pattern_iterations_per_s": fft_bound(start, min(n_iter, 100)),
        "median_best_chi2": float(res.best_chi2.median()),
        "collapsed": int(res.collapsed.sum()),
    }
    if torch.device(device).type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default="1024,4096,8192,16384")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run (tests)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=str(HERE / "results" / "gpu_phasing.json"))
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    schedule, shrinkwrap = PAPER_SCHEDULE, ShrinkWrap()
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    device = args.device
    if args.smoke:
        device, sizes = "cpu", [4]
        schedule, shrinkwrap = parse("2*(10*HIO+5*ER)"), ShrinkWrap(start=10, every=5)
    name = torch.cuda.get_device_name(0) if torch.device(device).type == "cuda" else "cpu"
    rows = []
    for b in sizes:
        row = bench(b, device, schedule, shrinkwrap)
        rows.append(row)
        print(
            f"{name} B={b:6d}: {row['patterns_per_s']:9.1f} patterns/s, "
            f"{row['pattern_iterations_per_s']:12.0f} pattern-it/s (FFT-only "
            f"{row['fft_only_pattern_iterations_per_s']:12.0f}), median best chi2 "
            f"{row['median_best_chi2']:.3g}"
            + (f", peak {row['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in row else ""),
            flush=True,
        )
    result = {
        "device": name,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "schedule": str(schedule),
        "smoke": args.smoke,
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
