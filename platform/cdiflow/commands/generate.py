"""``cdiflow generate``: write a synthetic training data set (Parquet shards + manifest)."""

from __future__ import annotations

import argparse
from pathlib import Path

from cdiflow.commands.common import add_address, add_verbose, add_workspace, ray_console
from cdiflow.formats.location import Location, location_arg

DESCRIPTION = """\
Generate synthetic diffraction patterns (superellipsoid particles with a strong random
phase, paper eqs. 2-3) on Ray Data and write them as Parquet shards plus a manifest:

  OUT/manifest.json  OUT/{train,val,test}/shard-NNNNN.parquet

OUT is a folder or an object-storage URI (s3://bucket/prefix, gs://bucket/prefix) that
every Ray node can write, with the credentials in its environment (AWS_* for S3).

NUM_PATTERNS are split 95/5 into train/val (every 20th index is validation); the test
set (--test-patterns, default 300) has its own indices. The same config and seed give
byte-identical shards whatever the number of workers. Killed? Re-run the same command:
complete shards are kept, the rest is generated, the bytes are the same.

--preset paper (the default) is the paper's noise-free, unmasked data set, unchanged to
the bit. --preset realistic draws per pattern what real scans have: Poisson counts
(1e4 to 1e9 in total), a flat background, a central beamstop, detector gaps in half the
patterns, an edge smoothing of 0.4 to 0.7 voxels and an oversampling of 2 to 6 (the
particle magnified to it, as far as the object box allows); its shards get a per-row
`mask` column (1 = measured). The ranges are the config's generator.variation section.
"""

EPILOG = """\
examples:
  cdiflow generate --num-patterns 2000 --shards 8 --out workspace/data
  cdiflow generate --num-patterns 150000 --out workspace/data150k --workers 2
  cdiflow generate --preset realistic --num-patterns 20000 --out workspace/realistic
  cdiflow generate --config my-generate.yaml --out workspace/noisy --address auto
  cdiflow generate --num-patterns 150000 --out s3://my-bucket/cdi/data150k --address auto

The default config, with every key documented, is cdiflow/configs/generate.yaml.
Exit codes: 0 done, 2 bad input (invalid config, output folder holding other files).
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate",
        help="generate a synthetic training data set (Parquet on Ray Data)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--out",
        required=True,
        type=location_arg,
        help="output folder (new or ours) or object-storage URI (s3://bucket/prefix)",
    )
    parser.add_argument(
        "--num-patterns",
        type=int,
        metavar="N",
        help="train + validation patterns, split 95/5 (default 2000)",
    )
    parser.add_argument(
        "--shards", type=int, metavar="S", help="training shards (default: ~2048 rows each)"
    )
    parser.add_argument("--config", type=Path, metavar="YAML", help="generation config file")
    parser.add_argument(
        "--preset",
        choices=("paper", "realistic"),
        help="training set: the paper's noise-free patterns (default) or realistic ones "
        "(counts, background, beamstop, gaps, edges, oversampling drawn per pattern; "
        "with masks)",
    )
    parser.add_argument("--seed", type=int, help="base seed (default 0)")
    parser.add_argument(
        "--test-patterns", type=int, metavar="T", help="test set size (default 300)"
    )
    parser.add_argument(
        "--workers", type=int, metavar="W", help="concurrent shard writers (default: CPUs)"
    )
    add_address(parser)
    add_workspace(parser)
    add_verbose(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)
    return parser


def load_config(args: argparse.Namespace):
    """The run's ``GenerateConfig``: the YAML (or defaults) with the flags on top."""
    from cdiflow.pipelines.generate import GenerateConfig

    overrides = {
        "num_patterns": args.num_patterns,
        "shards": args.shards,
        "seed": args.seed,
        "test_patterns": args.test_patterns,
        "workers": args.workers,
        "preset": args.preset,
    }
    return GenerateConfig.from_yaml(args.config, overrides)


def run(args: argparse.Namespace) -> int:
    from cdiflow.pipelines.generate import generate_dataset

    config = load_config(args)
    ray_console(args)
    report = generate_dataset(config, args.out, address=args.address, progress=not args.no_progress)
    print(summary(report))
    return 0


def summary(report) -> str:
    """Where the data went and how fast (a few lines for the terminal)."""
    total = sum(report.counts.values())
    counts = ", ".join(f"{split} {n}" for split, n in report.counts.items())
    lines = [
        f"data set: {report.out} ({total} patterns: {counts}; {report.shards} shards; "
        f"{report.bytes / 1e6:.1f} MB, {report.bytes / total / 1e3:.1f} kB/pattern)",
        f"manifest: {Location.parse(report.out) / 'manifest.json'}",
    ]
    if report.kept_shards:
        lines.append(f"resumed: kept {report.kept_shards} complete shard(s) from an earlier run")
    if report.generated:
        lines.append(
            f"generated {report.generated} patterns in {report.seconds:.1f} s: "
            f"{report.patterns_per_second:.0f} patterns/s with {report.workers} worker(s)"
        )
    else:
        lines.append("nothing to generate: the data set was already complete")
    return "\n".join(lines)
