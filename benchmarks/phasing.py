"""Phasing benchmark: our batched torch engine against cohere-core, same patterns, same schedule.

Both run the paper's 600-iteration ER/HIO switch schedule (``PAPER_SCHEDULE``,
``5*(100*HIO+20*ER)``) with Gaussian shrink-wrap from iteration 100 every 10
(sigma 1, threshold 0.1), from the same random-phase start in the central 32 x 32 box.
cohere-core runs one pattern at a time on numpy, in a subprocess (it reseeds numpy's
global RNG from the clock); we run batches. Differences that remain: cohere's
shrink-wrap has no upper-bound support (ours clips to the 32 x 32 box, as the paper).

chi^2 (eq. 5, scale fitted) is computed here, with ``cdiflow.metrics.chi2``, on the final
object of each engine, so both are scored by one function.

Usage::

    python benchmarks/phasing.py                  # full run, writes results/phasing.json
    python benchmarks/phasing.py --patterns 16 --batch-sizes 16 --cohere-patterns 4  # quick

The JSON holds every measurement and the load average, since the machine is shared.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "platform"))

from cdiflow.formats.atomic import atomic_write_json  # noqa: E402
from cdiflow.metrics import chi2  # noqa: E402
from cdiflow.phasing.refine import refine  # noqa: E402
from cdiflow.phasing.schedule import PAPER_SCHEDULE  # noqa: E402
from cdiflow.phasing.shrinkwrap import ShrinkWrap  # noqa: E402
from cdiflow.phasing.starts import random_phase_rectangle  # noqa: E402
from cdiflow.physics.fft import centred_fft2  # noqa: E402

SHRINKWRAP = ShrinkWrap(start=100, every=10, sigma=1.0, threshold=0.1)


def test_patterns(n: int, seed: int) -> np.ndarray:
    """(n, 64, 64) float32 moduli from the physics generator (strong phase, default config)."""
    from cdiflow.physics.generator import GeneratorConfig, generate_samples

    return generate_samples(GeneratorConfig(), seed, np.arange(n)).modulus


def to_cohere_layout(x: np.ndarray) -> np.ndarray:
    """Centred object -> cohere's direct-space layout.

    cohere keeps data fftshift-ed (origin in the corner) and uses ``ifftn`` as its forward
    transform, so ``ifftn(z)`` matches our ``fftn(ifftshift(x))`` when ``z`` is the point
    inversion ``z[n] = ifftshift(x)[-n]``.
    """
    z = np.fft.ifftshift(x, axes=(-2, -1))
    return np.roll(np.flip(z, axis=(-2, -1)), 1, axis=(-2, -1))


def from_cohere_layout(z: np.ndarray) -> np.ndarray:
    """Inverse of ``to_cohere_layout`` (point inversion is its own inverse)."""
    return np.fft.fftshift(np.roll(np.flip(z, axis=(-2, -1)), 1, axis=(-2, -1)), axes=(-2, -1))


def _stub_matplotlib() -> None:
    """cohere-core imports pyplot (for its live viewers) at import time; phasing never
    plots. Where matplotlib is absent (a bare GPU image) stand-in modules let it import."""
    import types

    mpl = types.ModuleType("matplotlib")
    mpl.pyplot = types.ModuleType("matplotlib.pyplot")
    mpl.widgets = types.ModuleType("matplotlib.widgets")
    mpl.widgets.Slider = object
    sys.modules.update(
        {"matplotlib": mpl, "matplotlib.pyplot": mpl.pyplot, "matplotlib.widgets": mpl.widgets}
    )


def cohere_worker(in_path: str, out_path: str) -> None:
    """Run in a subprocess: phase every pattern of ``in_path`` with cohere-core (numpy)."""
    import contextlib
    import io

    try:
        import matplotlib.pyplot  # noqa: F401
    except ImportError:
        _stub_matplotlib()
    import cohere_core.controller.phasing as ph

    data = np.load(in_path)
    images, times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (m, start, support) in enumerate(
            zip(data["modulus"], data["start"], data["support"], strict=True)
        ):
            np.save(os.path.join(tmp, "data.npy"), m.astype(np.float32))
            cont = os.path.join(tmp, f"cont{i}")
            os.makedirs(cont)
            np.save(os.path.join(cont, "image.npy"), to_cohere_layout(start * support))
            np.save(os.path.join(cont, "support.npy"), to_cohere_layout(support).astype(np.int64))
            params = {
                "algorithm_sequence": str(data["schedule"]),
                "shrink_wrap_trigger": [SHRINKWRAP.start, SHRINKWRAP.every],
                "shrink_wrap_type": "GAUS",
                "shrink_wrap_threshold": SHRINKWRAP.threshold,
                "shrink_wrap_gauss_sigma": SHRINKWRAP.sigma,
                "hio_beta": 0.9,
                "continue_dir": cont,
            }
            with contextlib.redirect_stdout(io.StringIO()):
                rec = ph.create_rec(params, os.path.join(tmp, "data.npy"), "np", -1, debug=True)
                t0 = time.perf_counter()
                rec.iterate()
                times.append(time.perf_counter() - t0)
            images.append(from_cohere_layout(np.asarray(rec.ds_image)))
    np.savez(out_path, image=np.stack(images), seconds=np.array(times))


def run_cohere(modulus, start, support, schedule: str) -> dict | None:
    """cohere-core in a subprocess; None (with the reason printed) if it is not installed."""
    try:
        import cohere_core  # noqa: F401
    except ImportError:
        print("cohere-core not installed (pip install cohere-core): skipping the anchor")
        return None
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        np.savez(src, modulus=modulus, start=start, support=support, schedule=schedule)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, "--cohere-worker", src, dst], capture_output=True, text=True
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(f"cohere-core failed: {proc.stderr[-2000:]}")
            return None
        out = np.load(dst)
        images, seconds = out["image"], out["seconds"]
    final = chi2(
        centred_fft2(torch.from_numpy(images)).abs(),
        torch.from_numpy(modulus).double(),
        fit_scale=True,
    ).numpy()
    n, iters = len(modulus), len(PAPER_SCHEDULE)
    return {
        "patterns": n,
        "seconds_iterating": float(seconds.sum()),
        "seconds_wall": wall,
        "patterns_per_s": n / float(seconds.sum()),
        "pattern_iterations_per_s": n * iters / float(seconds.sum()),
        "final_chi2_median": float(np.median(final)),
        "final_chi2_mean": float(np.mean(final)),
        "final_chi2": final.tolist(),
    }


def run_ours(modulus, start, batch: int, device: str = "cpu") -> dict:
    """Our engine over all patterns in batches of ``batch``; time and eq. 5 of the results."""
    n, iters = len(modulus), len(PAPER_SCHEDULE)
    finals, bests, seconds = [], [], 0.0
    for a in range(0, n, batch):
        t0 = time.perf_counter()
        res = refine(
            modulus[a : a + batch],
            start.select(slice(a, a + batch)),
            PAPER_SCHEDULE,
            shrinkwrap=SHRINKWRAP,
            device=device,
        )
        seconds += time.perf_counter() - t0
        final = chi2(
            centred_fft2(res.final_obj).abs(),
            torch.from_numpy(modulus[a : a + batch]),
            fit_scale=True,
        )
        finals.append(final.numpy())
        bests.append(res.best_chi2.numpy())
    final, best = np.concatenate(finals), np.concatenate(bests)
    return {
        "batch": batch,
        "patterns": n,
        "seconds": seconds,
        "patterns_per_s": n / seconds,
        "pattern_iterations_per_s": n * iters / seconds,
        "final_chi2_median": float(np.median(final)),
        "final_chi2_mean": float(np.mean(final)),
        "best_chi2_median": float(np.median(best)),
        "final_chi2": final.tolist(),
    }


def fft_bound(batch: int, iterations: int = 100) -> float:
    """patterns/s for 600 iterations if only the two FFTs per iteration were done."""
    x = torch.randn(
        batch, 64, 64, dtype=torch.complex64, generator=torch.Generator().manual_seed(0)
    )
    t0 = time.perf_counter()
    for _ in range(iterations):
        x = torch.fft.ifft2(torch.fft.fft2(x, norm="ortho"), norm="ortho")
    return batch * iterations / (time.perf_counter() - t0) / len(PAPER_SCHEDULE)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patterns", type=int, default=256, help="patterns for our engine")
    parser.add_argument(
        "--cohere-patterns",
        type=int,
        default=32,
        help="the first N patterns also go through cohere-core (0: skip)",
    )
    parser.add_argument("--batch-sizes", default="32,64,128,256")
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument("--out", default=str(HERE / "results" / "phasing.json"))
    parser.add_argument("--cohere-worker", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.cohere_worker:
        cohere_worker(*args.cohere_worker)
        return 0
    if args.threads:
        torch.set_num_threads(args.threads)

    modulus = test_patterns(args.patterns, args.seed)
    start = random_phase_rectangle(args.patterns, rng=args.seed)
    sizes = [int(b) for b in args.batch_sizes.split(",")]
    load_before = os.getloadavg()
    ours = [run_ours(modulus, start, b) for b in sizes]
    bounds = {b: fft_bound(b) for b in sizes}
    k = min(args.cohere_patterns, args.patterns)
    # our engine on exactly the cohere subset, for a like-for-like chi^2 comparison
    subset = run_ours(modulus[:k], start.select(slice(0, k)), max(k, 1)) if k else None
    cohere = None
    if k:
        cohere = run_cohere(
            modulus[:k], start.object[:k].numpy(), start.support[:k].numpy(), str(PAPER_SCHEDULE)
        )
    best = max(ours, key=lambda r: r["patterns_per_s"])
    result = {
        "schedule": str(PAPER_SCHEDULE),
        "shrinkwrap": SHRINKWRAP.to_dict(),
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "ours": ours,
        "fft_only_patterns_per_s": bounds,
        "ours_on_cohere_subset": subset,
        "cohere": cohere,
    }
    print(
        f"load average {load_before} -> {result['load_average_after']}, "
        f"torch threads {torch.get_num_threads()}"
    )
    for r in ours:
        print(
            f"ours  B={r['batch']:4d}: {r['patterns_per_s']:7.1f} patterns/s, "
            f"{r['pattern_iterations_per_s']:9.0f} pattern-it/s (FFT-only bound "
            f"{bounds[r['batch']]:.1f}), median final chi2 {r['final_chi2_median']:.4g}"
        )
    if cohere:
        ratio = best["patterns_per_s"] / cohere["patterns_per_s"]
        result["speed_ratio_best_batch_vs_cohere"] = ratio
        result["chi2_median_ratio_ours_vs_cohere_same_patterns"] = (
            subset["final_chi2_median"] / cohere["final_chi2_median"]
        )
        print(
            f"cohere-core (numpy, 1 pattern at a time, {k} patterns): "
            f"{cohere['patterns_per_s']:.2f} patterns/s, "
            f"{cohere['pattern_iterations_per_s']:.0f} pattern-it/s, "
            f"median final chi2 {cohere['final_chi2_median']:.4g}"
        )
        print(f"ours on the same {k} patterns: median final chi2 {subset['final_chi2_median']:.4g}")
        print(
            f"ratio speed (ours best batch / cohere): {ratio:.1f}x; "
            f"ratio median chi2 (ours / cohere): "
            f"{result['chi2_median_ratio_ours_vs_cohere_same_patterns']:.2f}"
        )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
