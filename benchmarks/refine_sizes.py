"""Refinement at 64 .. 512 pixels: seconds per scan and the process's peak memory.

A forward-CDI frame (``cdiflow.physics.beamtime.forward_cdi_frame``) of each size is
refined blind at native size by ``refine_batch``, ``--scans`` copies in one batch (four
starts each); the batch is cut into calls of at most ``refine_pixels`` pattern pixels,
so the peak memory should not grow with the batch. Each size runs in a fresh process
(``ru_maxrss`` is a high-water mark). Writes ``--json``.

    python benchmarks/refine_sizes.py --threads 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform as host
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", default="64,256,512")
    p.add_argument("--scans", default="2,8", help="batch sizes to compare per frame size")
    p.add_argument("--schedule", default="50*ER", help="memory does not depend on it")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--json", type=Path, default=REPO / "benchmarks" / "results" / "refine_sizes.json"
    )
    p.add_argument("--one", nargs=2, type=int, help=argparse.SUPPRESS)  # size, scans
    return p.parse_args(argv)


def measure(size: int, scans: int, schedule: str, threads: int) -> dict:
    """Refine ``scans`` copies of a ``size`` frame in this process; time and peak RSS."""
    import numpy as np
    import torch

    torch.set_num_threads(threads)
    from cdiflow.beamtime.preprocess import PreprocessConfig
    from cdiflow.beamtime.steps import (
        ReconstructConfig,
        plan_scans,
        read_and_preprocess,
        refine_batch,
        rows_to_batch,
    )
    from cdiflow.physics.beamtime import ForwardCDIConfig, forward_cdi_frame

    half = size // 2
    frame_config = ForwardCDIConfig(
        frame_size=size,
        object_size=min(96, half),
        radius=min(38.0, half / 2 - 2),
        gap_rows=(half + size // 12, half + size // 12 + 3),
        gap_cols=(half - size // 10, half - size // 10 + 2),
    )
    config = ReconstructConfig(
        schedule=schedule,
        start="autocorrelation",
        preprocess=PreprocessConfig(refine_size="native"),
    )
    with tempfile.TemporaryDirectory() as folder:
        np.save(Path(folder) / "frame.npy", forward_cdi_frame(frame_config)[0])
        row = read_and_preprocess(plan_scans([folder])[0], config)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    batch = refine_batch(rows_to_batch([row] * scans), config)
    seconds = time.perf_counter() - t0
    return {
        "size": size,
        "scans": scans,
        "starts": config.starts,
        "refine_pixels": config.refine_pixels,
        "seconds_per_scan": seconds / scans,
        "peak_rss_mib_before": before,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ok": int(sum(s == "ok" for s in batch["status"])),
    }


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.one:
        print(json.dumps(measure(*args.one, args.schedule, args.threads)))
        return 0
    runs = []
    for size in map(int, args.sizes.split(",")):
        for scans in map(int, args.scans.split(",")):
            cmd = [sys.executable, __file__, "--one", str(size), str(scans)]
            cmd += ["--schedule", args.schedule, "--threads", str(args.threads)]
            out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
            runs.append(json.loads(out.strip().splitlines()[-1]))
            print(json.dumps(runs[-1]), flush=True)
    from cdiflow.formats.atomic import atomic_write_json
    from cdiflow.pipelines.tracking import git_sha

    report = {
        "runs": runs,
        "schedule": args.schedule,
        "git_sha": git_sha(REPO),
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{host.machine()}, {os.cpu_count()} cores visible",
        "torch_threads": args.threads,
        "loadavg": list(os.getloadavg()),
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, report, indent=1, default=str)
    print(f"wrote {args.json.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
