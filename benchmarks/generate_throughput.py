"""End-to-end data set generation on Ray Data: patterns/s with 1 and 2 workers, disk, memory.

    PYTHONPATH=platform python benchmarks/generate_throughput.py            # ~2 min
    PYTHONPATH=platform python benchmarks/generate_throughput.py --smoke    # seconds
    PYTHONPATH=platform python benchmarks/generate_throughput.py --cli-patterns 150000

One local Ray (2 CPUs, as ``cdiflow generate`` starts it) runs, in this order: a warm-up
(workers start and import torch), then the same data set with 1 and with 2 workers
(generation wall time, Ray start-up excluded; the ratio is the figure to quote, since
this machine is shared), then a larger run for memory. CPU milliseconds per pattern
(summed over the whole process tree) are less sensitive to other load than wall time.
For context, the in-process baseline generates and writes shards in this process with
one thread and no Ray.

Memory: the process tree (this driver, Ray's GCS and raylet, the workers) is sampled
every 0.25 s. ``rss_sum`` adds each process's RSS (an upper bound: shared libraries
count once per process); ``pss_sum`` (sampled every 2 s) shares them out fairly.

``--cli-patterns N`` also runs ``cdiflow generate --num-patterns N`` as a subprocess and
records its wall time, bytes per pattern and the peak memory of its process tree.
Results go to benchmarks/results/generate_throughput.json (``--json`` to change).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from cdiflow.formats.atomic import atomic_write_json
from cdiflow.formats.dataset import generate_shard
from cdiflow.formats.layout import DatasetConfig
from run_record import run_record

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "generate_throughput.json"


class TreeMemory:
    """Peak summed RSS / PSS of a process and all its descendants, sampled in a thread."""

    def __init__(self, pid: int, interval: float = 0.25, pss_every: int = 8):
        self.root, self.interval, self.pss_every = psutil.Process(pid), interval, pss_every
        self.peak_rss = self.peak_pss = self.peak_processes = self.peak_single = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        tick = 0
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.NoSuchProcess:
                return
            rss = [_measure(p, lambda p: p.memory_info().rss) for p in procs]
            self.peak_rss = max(self.peak_rss, sum(rss))
            self.peak_single = max(self.peak_single, max(rss))
            if tick % self.pss_every == 0:
                pss = sum(_measure(p, lambda p: p.memory_full_info().pss) for p in procs)
                self.peak_pss = max(self.peak_pss, pss)
            self.peak_processes = max(self.peak_processes, len(procs))
            tick += 1
            self._stop.wait(self.interval)

    def figures(self) -> dict:
        return {
            "peak_rss_sum_mb": round(self.peak_rss / 2**20, 1),
            "peak_pss_sum_mb": round(self.peak_pss / 2**20, 1),
            "peak_single_process_rss_mb": round(self.peak_single / 2**20, 1),
            "peak_processes": self.peak_processes,
        }


def _measure(proc: psutil.Process, measure) -> int:
    try:
        return measure(proc)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0  # exited between listing and measuring


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its live descendants."""
    root = psutil.Process(pid)
    procs = [root, *root.children(recursive=True)]
    return sum(_measure(p, lambda p: sum(p.cpu_times()[:2])) for p in procs)


def _folder_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in root.rglob("*") if p.is_file())


def in_process_baseline(config: DatasetConfig, scratch: Path) -> dict:
    """Generate + write every shard here, one thread, no Ray: the per-core ceiling."""
    import torch

    torch.set_num_threads(1)
    root = scratch / "in-process"
    start, cpu = time.perf_counter(), time.process_time()
    for spec in config.shard_specs():
        (root / spec.split).mkdir(parents=True, exist_ok=True)
        generate_shard(root, config, spec)
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    total = sum(config.count(s) for s in ("train", "val", "test"))
    return {
        "patterns": total,
        "seconds": round(seconds, 2),
        "patterns_per_s": round(total / seconds, 1),
        "cpu_ms_per_pattern": round(1000 * cpu / total, 3),
    }


def ray_runs(config: DatasetConfig, large: DatasetConfig, scratch: Path) -> dict:
    import ray

    from cdiflow.pipelines.cluster import LOCAL_OBJECT_STORE_BYTES
    from cdiflow.pipelines.generate import generate_dataset

    ray.init(num_cpus=2, object_store_memory=LOCAL_OBJECT_STORE_BYTES, include_dashboard=False)
    results = {}
    try:
        warm = config.replace(num_patterns=max(40, config.chunk_size * 4), test_patterns=8)
        generate_dataset(warm, scratch / "warm", workers=2, progress=False)
        for workers in (1, 2):
            cpu = tree_cpu_seconds(os.getpid())
            report = generate_dataset(
                config, scratch / f"w{workers}", workers=workers, progress=False
            )
            cpu = tree_cpu_seconds(os.getpid()) - cpu
            results[f"workers_{workers}"] = {
                "patterns": report.generated,
                "seconds": round(report.seconds, 2),
                "patterns_per_s": round(report.patterns_per_second, 1),
                "bytes_per_pattern": round(report.bytes / report.generated),
                # every process of this Ray (driver, raylet, workers): overhead included
                "cpu_ms_per_pattern": round(1000 * cpu / report.generated, 3),
            }
            shutil.rmtree(scratch / f"w{workers}")
        with TreeMemory(os.getpid()) as memory:
            report = generate_dataset(large, scratch / "large", workers=2, progress=False)
        results["large_run"] = {
            "patterns": report.generated,
            "seconds": round(report.seconds, 2),
            "patterns_per_s": round(report.patterns_per_second, 1),
            "bytes_per_pattern": round(report.bytes / report.generated),
            **memory.figures(),
        }
    finally:
        ray.shutdown()
    one, two = results["workers_1"], results["workers_2"]
    results["speedup_2_over_1"] = round(two["patterns_per_s"] / one["patterns_per_s"], 2)
    return results


def cli_run(patterns: int, scratch: Path) -> dict:
    """``cdiflow generate --num-patterns N`` as a user runs it, memory of its tree."""
    out = scratch / "cli"
    command = [sys.executable, "-m", "cdiflow.cli", "generate", "--no-progress"]
    command += ["--num-patterns", str(patterns), "--out", str(out)]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    with TreeMemory(process.pid) as memory:
        stdout, stderr = process.communicate()
    wall = time.perf_counter() - start
    if process.returncode != 0:
        raise RuntimeError(f"cdiflow generate failed ({process.returncode}): {stderr[-2000:]}")
    size = _folder_bytes(out)
    total = json.loads((out / "manifest.json").read_text())["counts"]
    rate = re.search(r"([\d.]+) patterns/s", stdout)
    return {
        "num_patterns": patterns,
        "patterns_written": sum(total.values()),
        "wall_s": round(wall, 1),
        "generation_patterns_per_s": float(rate.group(1)) if rate else None,
        "bytes_per_pattern": round(size / sum(total.values())),
        "dataset_gb": round(size / 1e9, 2),
        **memory.figures(),
        "stdout": stdout.strip().splitlines(),
    }


def main(argv: list[str] | None = None) -> int:
    load_before = list(os.getloadavg())
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patterns", type=int, default=6000, help="per timed run (train+val)")
    parser.add_argument("--large-patterns", type=int, default=20000, help="memory run")
    parser.add_argument("--cli-patterns", type=int, default=0, help="also run the CLI this big")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, for tests")
    parser.add_argument("--json", type=Path, default=RESULTS, help="where results go")
    parser.add_argument("--scratch", type=Path, help="folder for the data (default: a temp)")
    args = parser.parse_args(argv)
    if args.smoke:
        args.patterns, args.large_patterns = 80, 120
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    config = DatasetConfig(num_patterns=args.patterns, test_patterns=20, shards=8)
    large = DatasetConfig(num_patterns=args.large_patterns, seed=1)
    scratch = Path(tempfile.mkdtemp(prefix="cdiflow-gen-bench-", dir=args.scratch))
    results = {
        **run_record("generate_throughput.py", load_before),
        # the header's "machine" gives way to the dict readme_benchmarks reads, as before
        "machine": {"cpus": os.cpu_count(), "load_before": [round(x, 2) for x in load_before]},
        "config": {"patterns": args.patterns, "shards": 8, "chunk_size": config.chunk_size},
    }
    try:
        results["in_process_1_thread"] = in_process_baseline(config, scratch)
        results["ray"] = ray_runs(config, large, scratch)
        if args.cli_patterns:
            results["cli_run"] = cli_run(args.cli_patterns, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    results["machine"]["load_after"] = [round(x, 2) for x in os.getloadavg()]
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, results, indent=2)
    ray_results = results["ray"]
    print(json.dumps(results, indent=2))
    print(
        f"1 worker {ray_results['workers_1']['patterns_per_s']} patterns/s, 2 workers "
        f"{ray_results['workers_2']['patterns_per_s']} patterns/s: "
        f"{ray_results['speedup_2_over_1']}x; load {results['machine']['load_before']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
