"""Read rate of the APS 34-ID-C reader against the raw TIFF read rate, in one process.

For one scan: the raw rate (``tifffile.imread`` of every frame, nothing else), the
raw rate into one preallocated stack (``read_frames``, the reader's I/O part), the
reader's rate (``read_scan``: read + checks + dark/flat correction) and reader +
preprocessing. Prints frames/s, MB/s and the ratios; writes JSON. Runs on the real
scan 54 when ``../shared/data/aps-34idc-scan54`` exists, and on a synthetic scan of
the same size written to a temporary folder (seeded). Files are read warm (page cache):
the figures are decode + correction costs, the floor under any disk.

    PYTHONPATH=platform python benchmarks/read_rate_34idc.py [--repeats 5] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

REAL = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "aps-34idc-scan54"


def best_times(functions: dict, repeats: int) -> dict:
    """Minimum wall time of each function, interleaved so load drift hits all alike."""
    best = {name: float("inf") for name in functions}
    for _ in range(repeats):
        for name, fn in functions.items():
            start = time.perf_counter()
            fn()
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def measure(root: Path, repeats: int) -> dict:
    import tifffile

    from cdiflow.beamtime.preprocess import preprocess
    from cdiflow.formats.aps34idc import (
        discover_beamtime,
        load_calibration,
        read_frames,
        read_scan,
    )

    beamtime = discover_beamtime(root)
    entry = beamtime.scans()[0]
    calibration = load_calibration(beamtime)
    nbytes = sum(p.stat().st_size for p in entry.frame_paths)
    n = len(entry.frame_paths)
    times = best_times(
        {
            "raw": lambda: [tifffile.imread(p) for p in entry.frame_paths],
            "stack": lambda: read_frames(entry.frame_paths),
            "reader": lambda: read_scan(beamtime, entry, calibration),
            "full": lambda: preprocess(read_scan(beamtime, entry, calibration)),
        },
        repeats,
    )
    raw, stack, reader, full = (times[k] for k in ("raw", "stack", "reader", "full"))

    def rate(seconds: float) -> dict:
        return {
            "seconds": round(seconds, 4),
            "frames_per_s": round(n / seconds, 1),
            "MB_per_s": round(nbytes / seconds / 1e6, 1),
        }

    return {
        "scan": entry.name,
        "frames": n,
        "frame_shape": list(tifffile.imread(entry.frame_paths[0]).shape),
        "bytes": nbytes,
        "raw_read": rate(raw),
        "raw_read_into_stack": rate(stack),
        "reader": rate(reader),
        "reader_plus_preprocess": rate(full),
        "reader_over_raw": round(raw / reader, 3),
        "reader_over_stack_read": round(stack / reader, 3),
        "reader_plus_preprocess_over_raw": round(raw / full, 3),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results/read_rate_34idc.json")
    args = parser.parse_args()
    import torch

    # As a preprocessing worker should: on a loaded 2-core machine a 64 x 64 torch FFT
    # with 2 intra-op threads cost ~17 ms against 0.06 ms with one.
    torch.set_num_threads(1)
    from cdiflow.formats.aps34idc_writer import write_synthetic_beamtime
    from cdiflow.physics.beamtime import SyntheticBeamtimeConfig
    from run_record import run_record

    results = {
        **run_record("read_rate_34idc.py"),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "torch_threads": 1,
    }
    if REAL.is_dir():
        results["real_scan54"] = measure(REAL, args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        config = SyntheticBeamtimeConfig(scans=1, frames=128, detector_oversampling=4)
        start = time.perf_counter()
        write_synthetic_beamtime(tmp, config, np.random.default_rng(0))
        results["synthetic_write_seconds"] = round(time.perf_counter() - start, 3)
        results["synthetic"] = measure(Path(tmp), args.repeats)
    results["load_after"] = list(os.getloadavg())
    print(json.dumps(results, indent=2))
    out = Path(args.out)
    from cdiflow.formats.atomic import atomic_write_json

    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, results, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
