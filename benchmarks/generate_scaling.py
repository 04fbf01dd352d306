"""Generation scaling from 1 to N Ray workers: wall-clock speedup and CPU efficiency.

    PYTHONPATH=platform python benchmarks/generate_scaling.py [--patterns 3000] [--workers 1 2]

One local Ray with as many CPUs as the largest worker count runs the same data set
(``cdiflow.pipelines.generate.generate_dataset``, what ``cdiflow generate`` runs) with
each worker count, after a warm-up. Per run it records wall seconds and the CPU seconds
of the whole process tree (driver, GCS, raylet, workers), so two figures come out:

- ``speedup``: patterns/s against the 1-worker run, the figure to quote on an idle
  machine (target: >= 1.8 from 1 to 2 workers);
- ``cpu_efficiency``: CPU milliseconds per pattern with 1 worker over that with N. It is
  1.0 when adding workers adds no work (no serialisation, no contention), and it barely
  moves with other load on a shared machine, where wall-clock ratios cannot reach N
  because the other processes take the cores. With idle cores, speedup ~= N x
  cpu_efficiency.

Results go to benchmarks/results/generate_scaling.json (``--json``), with the load average.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import psutil

RESULTS = Path(__file__).resolve().parent / "results" / "generate_scaling.json"


def tree_cpu_seconds() -> float:
    """User + system CPU seconds of this process and its live descendants (Ray's)."""
    procs = [psutil.Process(), *psutil.Process().children(recursive=True)]
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:
            continue
    return total


def main(argv: list[str] | None = None) -> int:
    load_before = list(os.getloadavg())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patterns", type=int, default=16000, help="train + val per run")
    parser.add_argument(
        "--shards", type=int, default=None, help="training shards (default: 4 per CPU)"
    )
    parser.add_argument(
        "--workers", type=int, nargs="+", default=[1, 2, 1, 2], help="runs, in this order"
    )
    parser.add_argument("--json", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")

    import ray

    from cdiflow.pipelines.generate import GenerateConfig, generate_dataset
    from run_record import run_record

    cpus = max(args.workers)
    config = GenerateConfig(
        num_patterns=args.patterns,
        test_patterns=60,
        shards=args.shards or 4 * cpus,
        chunk_size=32,
    )
    ray.init(
        address="local",
        num_cpus=cpus,
        object_store_memory=150 * 1024**2,
        include_dashboard=False,
        logging_level="WARNING",
    )
    scratch = Path(tempfile.mkdtemp(prefix="gen-scaling-"))
    runs: list[dict] = []
    try:
        warm = config.replace(num_patterns=40 * cpus, test_patterns=8, shards=cpus)
        generate_dataset(warm, scratch / "warm", workers=cpus, progress=False)
        for workers in args.workers:
            cpu0, wall0 = tree_cpu_seconds(), time.perf_counter()
            report = generate_dataset(
                config, scratch / f"w{workers}", workers=workers, progress=False
            )
            wall, cpu = time.perf_counter() - wall0, tree_cpu_seconds() - cpu0
            runs.append(
                {
                    "workers": workers,
                    "patterns": report.generated,
                    "wall_s": round(wall, 2),
                    "generation_s": round(report.seconds, 2),
                    "patterns_per_s": round(report.generated / report.seconds, 1),
                    "cpu_s": round(cpu, 2),
                    "cpu_ms_per_pattern": round(1000 * cpu / report.generated, 2),
                }
            )
            shutil.rmtree(scratch / f"w{workers}")
    finally:
        ray.shutdown()
        shutil.rmtree(scratch, ignore_errors=True)
    base = next(r for r in runs if r["workers"] == min(args.workers))
    for row in runs:
        row["speedup"] = round(row["patterns_per_s"] / base["patterns_per_s"], 2)
        row["cpu_efficiency"] = round(base["cpu_ms_per_pattern"] / row["cpu_ms_per_pattern"], 2)
    result = {
        **run_record("generate_scaling.py", load_before),
        "cpu_count": os.cpu_count(),
        "load_average_before": [round(x, 1) for x in load_before],
        "load_average_after": [round(x, 1) for x in os.getloadavg()],
        "config": {"patterns": args.patterns, "shards": config.shards, "chunk_size": 32},
        "runs": runs,
    }
    from cdiflow.formats.atomic import atomic_write_json

    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, result, indent=1)
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
