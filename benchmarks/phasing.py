"""Phasing benchmark: our batched torch engine against cohere-core, same patterns, same schedule.

Both run the paper's 600-iteration ER/HIO switch schedule (``PAPER_SCHEDULE``,
``5*(100*HIO+20*ER)``) with Gaussian shrink-wrap from iteration 100 every 10
(sigma 1, threshold 0.1), from the same random-phase start in the central P/2 x P/2 box,
at pattern sizes P = 64, 128, 256 and 512. cohere-core runs one pattern at a time on
numpy, in a subprocess (it reseeds numpy's global RNG from the clock); we run one scan
at a time (batch 1) and batched (the batch ``cdiflow.phasing.runner.batch_for`` picks
from the cache size; at 64 x 64 also a sweep of batch sizes, where a batch above
``batch_for``'s runs in chunks of that size, as ``run_phasing`` does); at 2 threads also with
``run_phasing(threads=2)`` (rows with ``threads``: two single-threaded workers on
halves of the batch instead of torch's OpenMP threads, and one scan with the threads
``useful_threads`` gives it); the one-scan figures are the best batch-1 row.
Differences that remain: cohere's shrink-wrap has no upper-bound support (ours clips to
the box, as the paper).
PyNX is not compared: the PyPI package named ``pynx`` is an unrelated nginx tool, and
PyNX itself is not on PyPI.

Patterns: at 64 x 64 the physics generator's (strong phase, default config); larger
sizes use 2D synthetic particles (a smoothed superellipse with a smooth random phase
spanning 2 pi), since the generator's 3D volumes at 512 would cost more than the run.

Each configuration is run at 1 torch thread, 2 threads, and 2 threads beside a busy-loop
subprocess, with the load average before and after. Speed figures are best read as
ratios inside one run: against cohere-core, against the FFT pair alone at the same
batch and threads (the bound: the faster of one call on torch's OpenMP threads and one
single-threaded worker per thread on slices), and against ``--baseline REV``, the engine
(``phasing/runner.py``) of an earlier commit loaded from git, on the same patterns.

chi^2 (eq. 5, scale fitted) is computed here, with ``cdiflow.metrics.chi2``, on the final
object of each engine, so both are scored by one function.

Usage::

    python benchmarks/phasing.py --quick --baseline HEAD~1   # ~10 min on 2 loaded cores
    python benchmarks/phasing.py                              # more patterns per size
    python benchmarks/phasing.py --smoke --out x.json         # seconds (tests)

Writes, as each mode finishes, ``results/phasing.json`` (2 threads), ``phasing_1thread.json``
and ``phasing_2threads_loaded.json``: earlier runs' keys at 64 x 64, the mode's sizes, and
the issue's ratios under ``targets``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "platform"))
sys.path.insert(0, str(HERE))

from cdiflow.formats.atomic import atomic_write_json  # noqa: E402
from cdiflow.metrics import chi2  # noqa: E402
from cdiflow.phasing import cpu_fft, runner  # noqa: E402
from cdiflow.phasing.schedule import PAPER_SCHEDULE, as_schedule  # noqa: E402
from cdiflow.phasing.shrinkwrap import ShrinkWrap, square_support  # noqa: E402
from cdiflow.phasing.starts import random_phase_rectangle  # noqa: E402
from cdiflow.physics.fft import centred_fft2  # noqa: E402
from phasing_cohere import from_cohere_layout, run_cohere, to_cohere_layout  # noqa: E402,F401
from phasing_rows import fastest  # noqa: E402
from phasing_setup import git_sha, load_baseline, machine, test_patterns  # noqa: E402

SHRINKWRAP = ShrinkWrap(start=100, every=10, sigma=1.0, threshold=0.1)
# patterns per size through our engine / through cohere-core (the first ones)
FULL = {64: (256, 32), 128: (32, 8), 256: (8, 4), 512: (4, 2)}
QUICK = {64: (32, 32), 128: (8, 4), 256: (2, 2), 512: (1, 1)}
MODES = ((1, False), (2, False), (2, True))  # (threads, beside a busy process)


def run_ours(engine, modulus, start, batch: int, schedule, **extra) -> dict:
    """``engine.run_phasing`` over all patterns in batches; time and eq. 5 of the results."""
    # the schedule goes as its string: a baseline engine has its own Schedule class
    n, size = len(modulus), modulus.shape[-1]
    upper = square_support(size, size // 2)
    finals, seconds = [], 0.0
    for a in range(0, n, batch):
        m = torch.from_numpy(modulus[a : a + batch])
        t0 = time.perf_counter()
        res = engine.run_phasing(
            m, start.object[a : a + batch], start.support[a : a + batch], str(schedule),
            shrinkwrap=SHRINKWRAP, upper_bound=upper, **extra,
        )  # fmt: skip
        seconds += time.perf_counter() - t0
        finals.append(chi2(centred_fft2(res.obj).abs(), m, fit_scale=True).numpy())
    final = np.concatenate(finals)
    return {
        "batch": batch,
        "patterns": n,
        "seconds": seconds,
        "patterns_per_s": n / seconds,
        "pattern_iterations_per_s": n * len(schedule) / seconds,
        "final_chi2_median": float(np.median(final)),
        "final_chi2": final.tolist(),
        **extra,
    }


def interleaved(engines, modulus, start, batch: int, schedule, repeats: int = 4) -> list:
    """Per engine, its run of median speed over ``repeats`` turns, the engines taking
    turns (two turns swung the ratio of one engine to itself by 20% on the shared 2-core
    box). The median, not the best: cohere-core's figure is one pass, so the best of
    several of ours would flatter the ratio to it. Every turn's rate is kept."""
    runs = [[] for _ in engines]
    for _ in range(repeats):
        for i, engine in enumerate(engines):
            runs[i].append(run_ours(engine, modulus, start, batch, schedule))
    picked = []
    for turns in runs:
        ranked = sorted(turns, key=lambda r: r["patterns_per_s"])
        median = dict(ranked[(len(ranked) - 1) // 2])
        median["patterns_per_s_turns"] = [r["patterns_per_s"] for r in turns]
        picked.append(median)
    return picked


def fft_bound(batch: int, size: int, iterations: int, schedule_length: int) -> float:
    """patterns/s for ``schedule_length`` iterations if only the FFT pair were done, the
    best of two ways to use torch's threads: one call on the whole batch (torch's OpenMP
    threads), or, at n > 1 threads, n single-threaded workers on slices of it, as
    ``run_phasing(threads=n)`` runs (on some CPUs that is 2x faster, on others slower;
    the bound is the faster). A single pattern also gets the threads ``run_phasing``
    gives it (``pattern_threads``: one at 64 x 64, no more than are idle), since on
    a busy machine torch's OpenMP threads wait for each other and the bound would
    collapse below our rate."""
    threads = torch.get_num_threads()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, size, size, dtype=torch.complex64, generator=g)
    best = _median_seconds(lambda: _fft_pairs(x, iterations))
    useful = runner.pattern_threads(size, threads)
    if batch < threads and useful < threads:
        with runner.engine_threads(useful):
            best = min(best, _median_seconds(lambda: _fft_pairs(x, iterations)))
    if threads > 1 and batch >= threads:
        parts = list(x.chunk(threads))
        with runner.engine_threads(1), ThreadPoolExecutor(len(parts)) as pool:
            halves = lambda: list(pool.map(lambda p: _fft_pairs(p, iterations), parts))  # noqa: E731
            split = _median_seconds(halves)
        best = min(best, split)
    return batch * iterations / best / schedule_length


def _fft_pairs(x: torch.Tensor, iterations: int) -> None:
    # the pair the fused loop runs (cpu_fft's backend up to 128 x 128, torch's above), neither
    # transform scaling (the kernel's pass does): the tightest bound for this engine
    for _ in range(iterations):
        cpu_fft.ifft2_(cpu_fft.fft2(x))


def _median_seconds(run, repeats: int = 4) -> float:
    """Seconds of ``run`` at the median rate of ``repeats`` calls, by the rule
    ``interleaved`` picks our runs with (the lower median): the same statistic on both
    sides of the share: the best of several calls of the bound against the median of ours
    would understate the share by what the load swings on a shared machine."""
    times = sorted((_seconds(run) for _ in range(repeats)), reverse=True)
    return times[(repeats - 1) // 2]


def _seconds(run) -> float:
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


def bench_size(size: int, counts, threads: int, args, baseline) -> dict:
    """Every configuration at one pattern size, in the current thread setting."""
    n, k = counts
    schedule = as_schedule(args.schedule)
    modulus = test_patterns(n, args.seed, size)
    start = random_phase_rectangle(n, rng=args.seed, rect=(size // 2, size // 2), size=size)
    # warm-up: numba compiles (or loads from its cache) the CPU kernels on first use
    run_ours(runner, modulus[:1], start.select(slice(0, 1)), 1, as_schedule("2*HIO+2*ER"))
    auto = runner.batch_for(size, threads)
    batches = sorted({1, auto, *(args.batch_sizes if size == 64 else ())})
    batches = [b for b in batches if b <= n] or [n]
    paired = sorted({1, max(batches)}) if baseline is not None else []
    ours, before = [], []
    for b in batches:
        if b in paired:  # alternate with the baseline: the load drifts between runs
            mine, theirs = interleaved((runner, baseline), modulus, start, b, schedule)
            ours.append(mine)
            before.append(theirs)
        else:
            ours.append(run_ours(runner, modulus, start, b, schedule))
    if threads > 1:  # run_phasing's own thread handling: one scan, and a split batch
        ours.append(run_ours(runner, modulus, start, 1, schedule, threads=threads))
        if max(batches) > 1:
            ours.append(run_ours(runner, modulus, start, max(batches), schedule, threads=threads))
    sampled = run_ours(runner, modulus, start, max(batches), schedule, chi2_every=10)
    iters = min(len(schedule), max(20, int(4e7 / (size * size * max(batches)))))
    bounds = {str(b): fft_bound(b, size, iters, len(schedule)) for b in batches}
    cohere = None
    if k:
        sub = start.select(slice(0, k))
        cohere = run_cohere(
            modulus[:k], sub.object.numpy(), sub.support.numpy(), str(schedule), threads
        )
    return _summary(size, schedule, ours, sampled, before, bounds, cohere, k)


def _summary(size, schedule, ours, sampled, before, bounds, cohere, k) -> dict:
    best, one = fastest(ours), fastest(ours, batch=1)
    out = {
        "size": size,
        "schedule": str(schedule),
        "ours": ours,
        "ours_chi2_every_10": sampled,
        "baseline": before,
        "fft_only_patterns_per_s": bounds,
        "share_of_fft_bound_best_batch": best["patterns_per_s"] / bounds[str(best["batch"])],
        "cohere": cohere,
    }
    if cohere:
        # chi^2 does not depend on the batch (tested), so the first k of a run are the
        # same patterns, starts and schedule that cohere-core ran
        mine = float(np.median(best["final_chi2"][:k]))
        out["ours_on_cohere_subset"] = {
            "patterns": k,
            "batch": best["batch"],
            "patterns_per_s": best["patterns_per_s"],
            "final_chi2_median": mine,
        }
        out["speed_ratio_best_batch_vs_cohere"] = best["patterns_per_s"] / cohere["patterns_per_s"]
        out["speed_ratio_single_scan_vs_cohere"] = one["patterns_per_s"] / cohere["patterns_per_s"]
        out["chi2_median_ratio_ours_vs_cohere_same_patterns"] = mine / cohere["final_chi2_median"]
        out["chi2_paired_vs_cohere"] = paired_chi2(best["final_chi2"][:k], cohere["final_chi2"])
    if before:
        out["speed_ratio_vs_baseline"] = {
            str(b["batch"]): o["patterns_per_s"] / b["patterns_per_s"]
            for b in before
            for o in ours
            if o["batch"] == b["batch"]
        }
    return out


def paired_chi2(ours, theirs, resamples: int = 2000, seed: int = 0) -> dict:
    """Final chi^2 pattern by pattern (same pattern, start and schedule in both engines).

    HIO turns rounding into a different answer, so one run's median ratio over a few dozen
    patterns moves by several per cent; the bootstrap interval says how far.
    """
    ours, theirs = np.asarray(ours, float), np.asarray(theirs, float)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(ours), size=(resamples, len(ours)))
    ratios = np.median(ours[picks], axis=1) / np.median(theirs[picks], axis=1)
    low, high = np.quantile(ratios, [0.025, 0.975])
    return {
        "patterns": len(ours),
        "median_ratio": float(np.median(ours) / np.median(theirs)),
        "median_ratio_ci95": [float(low), float(high)],
        "median_per_pattern_ratio": float(np.median(ours / theirs)),
        "fraction_ours_not_worse": float(np.mean(ours <= theirs)),
    }


def busy_process() -> subprocess.Popen:
    """A second CPU-bound process (a pure-Python busy loop), for the loaded mode."""
    # it spins until its parent is gone, so a killed benchmark leaves nothing behind
    loop = "import os\np = os.getppid()\nwhile os.getppid() == p:\n    sum(range(10**5))"
    return subprocess.Popen([sys.executable, "-c", loop])


def run_mode(threads: int, busy: bool, counts: dict, args, baseline) -> dict:
    torch.set_num_threads(threads)
    proc = busy_process() if busy else None
    try:
        time.sleep(1.0 if busy else 0.0)  # let the busy loop take its core
        load_before = os.getloadavg()
        sizes = []
        for p in args.sizes:
            sizes.append(bench_size(p, counts[p], threads, args, baseline))
            print(f"{threads} thread(s){' +busy' if busy else ''}: ", end="")
            report_size(sizes[-1])
        load_after = os.getloadavg()
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
    return {
        "torch_threads": threads,
        "beside_busy_process": busy,
        "load_average_before": load_before,
        "load_average_after": load_after,
        "sizes": sizes,
    }


LEGACY = (
    "ours",
    "fft_only_patterns_per_s",
    "ours_on_cohere_subset",
    "cohere",
    "speed_ratio_best_batch_vs_cohere",
    "chi2_median_ratio_ours_vs_cohere_same_patterns",
)


def legacy_view(mode: dict, common: dict) -> dict:
    """One mode in the keys earlier runs wrote (64 x 64 figures at the top level)."""
    at64 = next((s for s in mode["sizes"] if s["size"] == 64), mode["sizes"][0])
    return {
        **common,
        "schedule": at64["schedule"],
        "torch_threads": mode["torch_threads"],
        "beside_busy_process": mode["beside_busy_process"],
        "load_average_before": mode["load_average_before"],
        "load_average_after": mode["load_average_after"],
        **{key: at64[key] for key in LEGACY if key in at64},
        "sizes": mode["sizes"],
    }


def report(mode: dict) -> None:
    """The mode's header line (its sizes were printed as they finished)."""
    print(
        f"--- {mode['torch_threads']} thread(s)"
        f"{' beside a busy process' if mode['beside_busy_process'] else ''}, load "
        f"{mode['load_average_before'][0]:.2f} -> {mode['load_average_after'][0]:.2f}"
    )


def report_size(s: dict) -> None:
    bound = s["fft_only_patterns_per_s"]
    rows = ", ".join(
        f"B={r['batch']}{' split' if 'threads' in r else ''} {r['patterns_per_s']:.3g}/s"
        for r in s["ours"]
    )
    line = f"{s['size']:4d}^2: ours {rows}; FFT-only " + ", ".join(
        f"B={b} {v:.3g}/s" for b, v in bound.items()
    )
    line += f"; best at {s['share_of_fft_bound_best_batch']:.0%} of its bound"
    line += f"; chi2_every=10 {s['ours_chi2_every_10']['patterns_per_s']:.3g}/s"
    if s.get("cohere"):
        line += (
            f"; cohere {s['cohere']['patterns_per_s']:.3g}/s: x"
            f"{s['speed_ratio_best_batch_vs_cohere']:.2f} batched, "
            f"x{s['speed_ratio_single_scan_vs_cohere']:.2f} one scan, chi2 ratio "
            f"{s['chi2_median_ratio_ours_vs_cohere_same_patterns']:.2f} (95% "
            f"{s['chi2_paired_vs_cohere']['median_ratio_ci95'][0]:.2f}-"
            f"{s['chi2_paired_vs_cohere']['median_ratio_ci95'][1]:.2f})"
        )
    if s.get("speed_ratio_vs_baseline"):
        ratios = ", ".join(f"B={b} x{v:.2f}" for b, v in s["speed_ratio_vs_baseline"].items())
        line += f"; vs baseline {ratios}"
    print(line, flush=True)


def targets(modes: list) -> dict:
    """Per size, the issue's ratios: ours / cohere (one scan, batched) and chi^2 per mode,
    share of the FFT-only bound, and the loaded 2-thread rate over the 1-thread rate."""
    out = {}
    for m in modes:
        tag = f"{m['torch_threads']}t" + ("+busy" if m["beside_busy_process"] else "")
        for s in m["sizes"]:
            row = out.setdefault(str(s["size"]), {})
            row[tag] = {
                "best_patterns_per_s": fastest(s["ours"])["patterns_per_s"],
                "one_scan_patterns_per_s": fastest(s["ours"], batch=1)["patterns_per_s"],
                "share_of_fft_bound": s["share_of_fft_bound_best_batch"],
                "load": m["load_average_before"][0],
                **{k: s[k] for k in s if k.startswith(("speed_ratio", "chi2_median"))},
            }
    for row in out.values():
        if "1t" in row and "2t+busy" in row:
            one, busy = row["1t"], row["2t+busy"]
            row["loaded_2t_over_1t"] = busy["best_patterns_per_s"] / one["best_patterns_per_s"]
    return out


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="64,128,256,512")
    parser.add_argument("--batch-sizes", default=None, help="the sweep at 64 x 64")
    parser.add_argument("--quick", action="store_true", help="fewer patterns (~10 min)")
    parser.add_argument("--smoke", action="store_true", help="seconds: tests only")
    parser.add_argument("--modes", default="1,2,2+busy", help="threads, '+busy': loaded")
    parser.add_argument("--cohere-patterns", type=int, default=None, help="override per size")
    parser.add_argument("--baseline", default=None, help="git revision of the engine to compare")
    parser.add_argument("--schedule", default=str(PAPER_SCHEDULE))
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument("--out", default=str(HERE / "results" / "phasing.json"))
    args = parser.parse_args(argv)
    args.sizes = [int(p) for p in args.sizes.split(",")]
    sweep = args.batch_sizes or ("32" if args.quick else "8,16,32,64")
    args.batch_sizes = [int(b) for b in sweep.split(",")]
    modes = [(int(m.split("+")[0]), m.endswith("+busy")) for m in args.modes.split(",")]
    if args.smoke:
        args.sizes, args.batch_sizes, modes = [64, 128], [2], [(1, False)]
        args.schedule = "2*(10*HIO+5*ER)"
    return args, modes


def counts_for(args) -> dict:
    table = QUICK if args.quick else FULL
    if args.smoke:
        table = {p: (2, 0) for p in args.sizes}
    out = {p: table.get(p, (1, 1)) for p in args.sizes}
    if args.cohere_patterns is not None:
        out = {p: (n, min(n, args.cohere_patterns)) for p, (n, _) in out.items()}
    return out


def write_mode(out: Path, mode: dict, common: dict) -> None:
    """A mode's file, as soon as it is done: ``out`` for 2 quiet threads, else ``out``'s
    stem + ``_1thread`` / ``_2threads_loaded`` (the names earlier runs used)."""
    tag = "" if mode["torch_threads"] == 2 and not mode["beside_busy_process"] else "_"
    if tag:
        tag += "1thread" if mode["torch_threads"] == 1 else f"{mode['torch_threads']}threads"
        tag += "_loaded" if mode["beside_busy_process"] else ""
    path = out.with_name(f"{out.stem}{tag}.json")
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {**legacy_view(mode, common), "modes": [mode]}, indent=1)
    print(f"wrote {path}", flush=True)


def cpu_kernels_used() -> str:
    """Which pixel-wise kernels our engine ran on CPU here (``run_phasing(kernels="auto")``)."""
    if not runner.fused_kernels("auto", torch.zeros(1)):
        return "torch (numba not installed)"
    import numba

    return f"numba {numba.__version__} (cdiflow.phasing.cpu_kernels)"


def main(argv=None) -> int:
    args, modes = parse_args(argv)
    baseline = load_baseline(args.baseline) if args.baseline else None
    common = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "git_sha": git_sha(),
        "machine": machine(),
        "baseline_revision": getattr(baseline, "REVISION", None),
        "cpu_count": os.cpu_count(),
        "shrinkwrap": SHRINKWRAP.to_dict(),
        "quick": args.quick,
        "smoke": args.smoke,
        "pynx": "not available: PyPI's `pynx` is an unrelated nginx tool; PyNX is not on PyPI",
        "torch_compile_cpu": "not used: measured slower than eager on CPU (docs/phasing.md)",
        "cpu_kernels": cpu_kernels_used(),
    }
    counts = counts_for(args)
    results = []
    for threads, busy in modes:
        results.append(run_mode(threads, busy, counts, args, baseline))
        report(results[-1])
        write_mode(Path(args.out), results[-1], {**common, "targets": targets(results)})
    return 0


if __name__ == "__main__":
    sys.exit(main())
