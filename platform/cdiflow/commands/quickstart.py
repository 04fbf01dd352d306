"""``cdiflow quickstart``: generate, train, register and reconstruct, on one machine."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cdiflow.commands.common import add_address, add_verbose, add_workspace, ray_console

DESCRIPTION = """\
Run the whole platform once on a local Ray (or the cluster that --address names) and an
embedded MLflow store (SQLite in the workspace): generate a small synthetic data set,
train a small CNN briefly (or reuse the workspace's registered champion), register it,
reconstruct a small synthetic beamtime in the APS 34-ID-C layout plus every --beamtime
folder, and write a report.
Under 10 minutes on a 2-core laptop; re-running reuses the data, model and results.
"""

#: Unlike the other verbs, the quickstart ignores RAY_ADDRESS (a shell prepared for a
#: cluster still gets its own local Ray); only --address sends it to a cluster.
ADDRESS_DEFAULT = "a new local Ray for this run; RAY_ADDRESS is ignored"

EPILOG = """\
examples:
  cdiflow quickstart
  cdiflow quickstart --workspace qs --beamtime ../shared/data/aps-34idc-scan54
  cdiflow quickstart --smoke            # CI size, a minute or two
  cdiflow quickstart --address auto     # on the cluster `ray start` runs here
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "quickstart",
        help="generate, train, register and reconstruct on a local Ray (one command)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_workspace(parser)
    parser.add_argument(
        "--beamtime",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="also reconstruct this beamtime folder (repeatable)",
    )
    parser.add_argument("--smoke", action="store_true", help="reduced sizes for CI")
    add_address(parser, when_omitted=ADDRESS_DEFAULT)
    add_verbose(parser)
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

    from cdiflow.pipelines.quickstart import QuickstartConfig, run_quickstart

    config = QuickstartConfig.smoke() if args.smoke else QuickstartConfig()
    ray_console(args)
    outcome = run_quickstart(args.workspace, args.beamtime, config, address=args.address)
    for name, info in outcome.beamtimes.items():
        print(f"{name}: {info['ok']} ok, {info['failed']} failed -> {info['report']}")
    print(f"open {outcome.report}")
    return 0
