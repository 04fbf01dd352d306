"""End-to-end beamtime throughput: scans/s, and the job's rate against the raw read rate.

Writes (or reuses, ``--data``) a synthetic beamtime of ``--scans`` rocking scans in the
APS 34-ID-C layout (``cdiflow.formats.aps34idc_writer``), then in one process:

1. raw read: every scan's TIFF frames read with ``read_frames`` (the reader's I/O part,
   one process, the same warm page cache the job sees) -> raw bytes/s and seconds;
2. the beamtime job (``reconstruct_beamtime`` on a local Ray started beforehand, so its
   start-up is not counted) -> wall seconds, scans/s, per-stage time sums.

"I/O-bound" means the job moves raw bytes at (nearly) the rate that reading alone does:
``job_vs_raw = raw_read_seconds / job_seconds``; target >= 0.7. The per-stage sums say
where the rest of the time goes. The CNN is an untrained default-size network unless
``--model`` is given (its weights do not change its cost). ``--smoke``: 6 small scans
and a short schedule (CI).

    python benchmarks/beamtime_throughput.py                 # 100 scans, paper schedule
    python benchmarks/beamtime_throughput.py --schedule "20*ER" --json out.json
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--scans", type=int, default=100)
    p.add_argument("--frames", type=int, default=32, help="rocking steps per scan")
    p.add_argument("--data", type=Path, help="beamtime folder to write or reuse")
    p.add_argument("--model", help="weights file or models:/ reference (default: untrained)")
    p.add_argument("--schedule", default="5*(100*HIO+20*ER)", help="default: the paper's")
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray")
    p.add_argument(
        "--figures", default="all", choices=("all", "suspect", "none"), help="scan figures"
    )
    p.add_argument(
        "--json", type=Path, default=REPO / "benchmarks" / "results" / "beamtime_throughput.json"
    )
    p.add_argument("--smoke", action="store_true", help="6 scans of 8 frames, short schedule")
    return p.parse_args(argv)


def write_beamtime(folder: Path, scans: int, frames: int) -> Path:
    from cdiflow.formats.aps34idc_writer import write_synthetic_beamtime
    from cdiflow.physics.beamtime import SyntheticBeamtimeConfig

    marker = folder / ".complete"
    wanted = f"{scans} {frames}"
    if marker.is_file() and marker.read_text() == wanted:
        return folder
    config = SyntheticBeamtimeConfig(scans=scans, frames=frames)
    write_synthetic_beamtime(folder, config, np.random.default_rng(0))
    marker.write_text(wanted)
    return folder


def raw_read(folder: Path) -> tuple[float, int]:
    """Seconds and bytes to read every scan's raw frames once (one process)."""
    from cdiflow.formats.aps34idc import discover_beamtime, read_frames

    beamtime = discover_beamtime(folder)
    seconds, nbytes = 0.0, 0
    for entry in beamtime.scans():
        t = time.perf_counter()
        stack = read_frames(entry.frame_paths)
        seconds += time.perf_counter() - t
        nbytes += stack.nbytes
    return seconds, nbytes


def untrained_weights(folder: Path) -> Path:

    from cdiflow.models import ModelConfig, build_model, save_weights

    config = ModelConfig()
    model = build_model(config, seed=0).eval()
    return save_weights(folder / "untrained.pt", model, config)


def main(argv=None) -> int:
    args = parse_args(argv)
    load_before = list(os.getloadavg())
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray

    from cdiflow.beamtime.steps import ReconstructConfig
    from cdiflow.pipelines.reconstruct import reconstruct_beamtime
    from run_record import run_record

    scans, frames = (6, 8) if args.smoke else (args.scans, args.frames)
    schedule = "2*(20*HIO+10*ER)" if args.smoke else args.schedule
    with tempfile.TemporaryDirectory(prefix="cdiflow-throughput-") as tmp:
        tmp = Path(tmp)
        folder = args.data or tmp / "beamtime"
        t = time.perf_counter()
        write_beamtime(folder, scans, frames)
        print(f"beamtime: {scans} scans x {frames} frames ({time.perf_counter() - t:.0f} s)")
        model = args.model or str(untrained_weights(tmp))
        raw_read(folder)  # warm the page cache the same way for both measurements
        raw_seconds, raw_bytes = raw_read(folder)
        raw_rate = raw_bytes / raw_seconds
        print(
            f"raw read: {raw_bytes / 1e6:.0f} MB in {raw_seconds:.2f} s = {raw_rate / 1e6:.0f} MB/s"
        )
        ray.init(num_cpus=args.cpus, include_dashboard=False, object_store_memory=200 * 1024**2)
        try:
            outcome = reconstruct_beamtime(
                [folder],
                tmp / "out",
                model=model,
                workspace=tmp / "ws",
                config=ReconstructConfig(schedule=schedule, figures=args.figures),
                progress=lambda line: None,
            )
        finally:
            ray.shutdown()
    rows = outcome.rows
    stages = {
        k: float(sum(r[k] for r in rows))
        for k in ("t_read", "t_preprocess", "t_cnn", "t_refine", "t_write")
    }
    busy = sum(stages.values())
    result = {
        **run_record("beamtime_throughput.py", load_before),
        "scans": scans,
        "frames": frames,
        "ok": len(outcome.ok),
        "schedule": schedule,
        "figures": args.figures,
        "job_seconds": outcome.seconds,
        "scans_per_s": scans / outcome.seconds,
        "job_bytes_per_s": raw_bytes / outcome.seconds,
        "raw_read_seconds": raw_seconds,
        "raw_read_bytes_per_s": raw_rate,
        "job_vs_raw": raw_seconds / outcome.seconds,
        "stage_seconds_sum": stages,
        "stage_fraction": {k: v / busy for k, v in stages.items()},
        "target": "job_vs_raw >= 0.7 (I/O-bound)",
        "cpus": args.cpus,
        "loadavg": list(os.getloadavg()),
        "smoke": args.smoke,
    }
    print(
        f"job: {scans} scans in {outcome.seconds:.1f} s = {result['scans_per_s']:.2f} scans/s, "
        f"{result['job_bytes_per_s'] / 1e6:.0f} MB/s = {result['job_vs_raw']:.0%} of the raw "
        "read rate"
    )
    shares = ", ".join(f"{k[2:]} {v:.0%}" for k, v in result["stage_fraction"].items())
    print(f"worker time by stage: {shares}; load average {os.getloadavg()[0]:.1f}")
    from cdiflow.formats.atomic import atomic_write_json

    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, result, indent=1)
    print(f"wrote {args.json}")
    return 0 if result["ok"] == scans else 1


if __name__ == "__main__":
    sys.exit(main())
