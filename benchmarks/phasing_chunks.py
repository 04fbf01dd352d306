"""Does running a large CPU batch in cache-sized chunks pay? Whole against chunked, one run.

``run_phasing`` runs a CPU batch ``batch_for`` patterns at a time (``chunk=None``); this
times ``--patterns`` 64 x 64 patterns of the physics generator, from random-rectangle
starts, through ``--schedule`` with shrink-wrap, whole (``chunk=0``) and chunked, in
alternating runs in one process, in three thread modes: 1 torch thread, 2 torch threads
(each op split over them) and 2 single-threaded workers on halves (``threads=2``). The
figure is the ratio of the median rates, chunked over whole; both give the same chi^2.

    PYTHONPATH=platform python benchmarks/phasing_chunks.py          # ~3 min, 2 cores
    PYTHONPATH=platform python benchmarks/phasing_chunks.py --smoke --out /tmp/c.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "platform"))
sys.path.insert(0, str(HERE))

from cdiflow.formats.atomic import atomic_write_json  # noqa: E402
from cdiflow.phasing.runner import batch_for, engine_threads, run_phasing  # noqa: E402
from cdiflow.phasing.shrinkwrap import ShrinkWrap, square_support  # noqa: E402
from cdiflow.phasing.starts import Start, random_phase_rectangle  # noqa: E402
from cdiflow.physics.generator import GeneratorConfig  # noqa: E402
from cdiflow.train.data import generate_tensors  # noqa: E402
from run_record import run_record  # noqa: E402

MODES = {"1 thread": (1, None), "2 threads": (2, None), "2 workers": (1, 2)}
"""Mode: (torch threads, ``run_phasing``'s ``threads``)."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--patterns", type=int, default=1024, help="patterns in the batch")
    p.add_argument("--schedule", default="100*HIO+20*ER", help="iterations per run")
    p.add_argument("--rounds", type=int, default=3, help="alternating runs of each")
    p.add_argument("--out", default=str(HERE / "results" / "phasing_chunks.json"))
    p.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    return p.parse_args(argv)


def timed(problem, schedule: str, threads, chunk) -> tuple[float, torch.Tensor]:
    """Patterns per second of one ``run_phasing`` call, and its answers' chi^2."""
    modulus, start, upper = problem
    t0 = time.perf_counter()
    res = run_phasing(
        modulus, start.object, start.support, schedule, shrinkwrap=ShrinkWrap(),
        upper_bound=upper, threads=threads, chunk=chunk,
    )  # fmt: skip
    return len(modulus) / (time.perf_counter() - t0), res.best_chi2


def bench_mode(problem, args, torch_threads: int, threads) -> dict:
    """Whole against chunked, alternating, at ``torch_threads`` and ``threads``."""
    rates, chi2 = {"whole": [], "chunked": []}, {}
    with engine_threads(torch_threads):
        for _ in range(args.rounds):
            for name, chunk in (("whole", 0), ("chunked", None)):
                rate, chi2[name] = timed(problem, args.schedule, threads, chunk)
                rates[name].append(rate)
        per_run = batch_for(problem[0].shape[-1], threads=1 if threads else torch_threads)
    medians = {k: statistics.median(v) for k, v in rates.items()}
    return {
        "torch_threads": torch_threads,
        "workers": threads or 1,
        "chunk": per_run,
        "patterns_per_s": rates,
        "median_patterns_per_s": medians,
        "speedup_chunked_vs_whole": medians["chunked"] / medians["whole"],
        "same_chi2": torch.allclose(chi2["whole"], chi2["chunked"], rtol=1e-3),
    }


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.smoke:
        args.patterns, args.schedule, args.rounds = 40, "4*HIO+2*ER", 1
    load_before = list(os.getloadavg())
    modulus = generate_tensors(GeneratorConfig(), 0, range(args.patterns))["modulus"]
    start = random_phase_rectangle(args.patterns, torch.Generator().manual_seed(0))
    problem = (modulus, start, square_support(64, 32))
    warm = Start(start.object[:2], start.support[:2], start.name)
    timed((modulus[:2], warm, problem[2]), "2*HIO+2*ER", None, 0)  # compiles the kernels
    modes = {name: bench_mode(problem, args, *how) for name, how in MODES.items()}
    result = {
        **run_record("phasing_chunks.py", load_before),
        "args": {k: v for k, v in vars(args).items() if k != "out"},
        "modes": modes,
        "load_after": list(os.getloadavg()),
    }
    atomic_write_json(args.out, result, indent=2)
    for name, m in modes.items():
        print(f"{name}: chunks of {m['chunk']} {m['speedup_chunked_vs_whole']:.2f}x whole")
    return result


if __name__ == "__main__":
    main()
