"""Nearest-neighbour search benchmark: ms per query against R references (paper: ~30 s).

With ``--data DIR`` the references are read from a Parquet data set
(``cdiflow.phasing.nns.ReferenceSet.from_parquet``); otherwise R synthetic references
with random features and targets are made (the timing does not depend on the content).
Each binning in ``--binnings`` is timed in the same process (1 = full 64 x 64
resolution, 2 = the default 32 x 32 coarse pass), with the full-resolution re-rank of the
top ``--k`` candidates included.

Usage::

    python benchmarks/nns.py                          # 150,000 synthetic references
    python benchmarks/nns.py --references 20000 --queries 64 --binnings 2
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "platform"))

from cdiflow.formats.atomic import atomic_write_json  # noqa: E402
from cdiflow.phasing.nns import ReferenceSet, features  # noqa: E402
from run_record import run_record  # noqa: E402


def synthetic_references(n: int, binning: int, seed: int = 0, chunk: int = 8192) -> ReferenceSet:
    """R references with the features of random positive 64 x 64 patterns (built in chunks)."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.cat(
        [
            features(torch.rand(min(chunk, n - a), 64, 64, generator=g), binning)
            for a in range(0, n, chunk)
        ]
    )
    rng = np.random.default_rng(seed)
    amp = rng.random((n, 32, 32), dtype=np.float32).astype(np.float16)
    phase = rng.random((n, 32, 32), dtype=np.float32).astype(np.float16)
    return ReferenceSet(feats, amp, phase, binning)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="data set folder (else synthetic)")
    parser.add_argument("--references", type=int, default=150_000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--binnings", default="2,1")
    parser.add_argument("--k", type=int, default=8)
    parser.add_argument("--query-batch", type=int, default=300)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--out", default=str(HERE / "results" / "nns.json"))
    args = parser.parse_args(argv)
    load_before = list(os.getloadavg())
    if args.threads:
        torch.set_num_threads(args.threads)
    g = torch.Generator().manual_seed(1)
    queries = torch.rand(args.queries, 64, 64, generator=g)
    rows = []
    for binning in [int(b) for b in args.binnings.split(",")]:
        t0 = time.perf_counter()
        if args.data:
            refs = ReferenceSet.from_parquet(args.data, binning, limit=args.references)
        else:
            refs = synthetic_references(args.references, binning)
        build = time.perf_counter() - t0
        refs.search(queries[:4], k=args.k)  # warm-up
        t0 = time.perf_counter()
        res = refs.search(queries, k=args.k, query_batch=args.query_batch)
        seconds = time.perf_counter() - t0
        row = {
            "binning": binning,
            "references": len(refs),
            "features": refs.features.shape[1],
            "feature_matrix_gib": refs.features.numel() * 4 / 2**30,
            "build_seconds": build,
            "queries": args.queries,
            "ms_per_query": 1e3 * seconds / args.queries,
            "median_chi2": float(np.median(res.chi2)),
        }
        rows.append(row)
        print(
            f"binning {binning}: {row['ms_per_query']:.2f} ms/query against {len(refs)} "
            f"references ({row['features']} features, {row['feature_matrix_gib']:.2f} GiB)",
            flush=True,
        )
        del refs
    result = {
        **run_record("nns.py", load_before),
        "threads": torch.get_num_threads(),
        "load_average": os.getloadavg(),
        "source": args.data or "synthetic",
        "k": args.k,
        "rows": rows,
    }
    print(f"torch threads {result['threads']}, load average {result['load_average']}")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
