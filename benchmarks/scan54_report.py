"""Scan 54 through the beamtime job as a user runs it: its summary row and its report figure.

Runs the per-scan stages (``cdiflow.beamtime.steps.run_items_locally``: the functions
every Ray worker runs) on the real APS 34-ID-C scan 54 with the default
``ReconstructConfig`` (4 starts: the CNN's, refined gently, and 3 random phases in its
support, refined the paper's way) and the given model, then:

- writes the scan's summary row (chi^2 of the CNN, of the answer, verdict, consensus,
  timings) with the machine, load, threads and git SHA to ``--json``;
- copies the scan's report figure (``previews/<key>.png``: the pattern with its mask,
  amplitude and phase with the support outline, every start's chi^2 curve) to
  ``--image``, the picture the README shows.

    python benchmarks/scan54_report.py --model pretrained
    python benchmarks/scan54_report.py --model pretrained-realistic \
        --json benchmarks/results/scan54_report_realistic.json --image ''
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))
sys.path.insert(0, str(REPO / "benchmarks"))

from cdiflow.beamtime.config import ReconstructConfig  # noqa: E402
from cdiflow.beamtime.steps import plan_scans, run_items_locally  # noqa: E402
from cdiflow.commands.common import add_model, add_workspace  # noqa: E402
from cdiflow.formats.atomic import atomic_write_json  # noqa: E402
from run_record import run_record  # noqa: E402
from scan54 import DEFAULT_DATA, load_cnn  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="scan 54 beamtime folder")
    add_model(p, when_omitted="champion")
    add_workspace(p)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=RESULTS / "scan54_report.json")
    p.add_argument(
        "--image",
        default=str(REPO / "docs" / "images" / "scan54_report.png"),
        help="where the report figure goes ('' : not copied)",
    )
    p.add_argument("--smoke", action="store_true", help="a short schedule, for tests")
    return p.parse_args(argv)


def _shareable(row: dict, data: Path) -> dict:
    """The summary row without this machine's paths: the source relative to the data
    folder's parent, and no result-file names (they were in a temporary folder)."""
    out = {k: v for k, v in row.items() if k not in ("result", "preview")}
    source = Path(str(row["source"]))
    base = Path(data).resolve().parent
    out["source"] = str(source.relative_to(base)) if source.is_relative_to(base) else source.name
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    load_before = list(os.getloadavg())
    model, model_info = load_cnn(args.model, args.workspace)
    config = ReconstructConfig()
    if args.smoke:
        config = config.replace(schedule="20*HIO+10*ER", guess=None)
    items = [i for i in plan_scans([args.data]) if i["number"] == 54]
    with tempfile.TemporaryDirectory() as out:
        rows = run_items_locally(items, model, config, out, {"model_version": "benchmark"})
        row = rows[0]
        if row["status"] != "ok":
            raise SystemExit(f"scan 54 failed at {row['stage']}: {row['reason']}")
        if args.image:
            Path(args.image).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(Path(out) / row["preview"], args.image)
    result = {
        **run_record("scan54_report.py", load_before),
        "load_after": list(os.getloadavg()),
        "model": model_info,
        "config": {k: v for k, v in config.to_dict().items() if k != "preprocess"},
        "image": Path(args.image).name if args.image else None,
        "row": _shareable(row, args.data),
        "smoke": args.smoke,
    }
    atomic_write_json(args.json, result, indent=1, default=str)
    print(
        f"scan 54: CNN chi2 {row['cnn_chi2']:.3g}, refined {row['refined_chi2']:.3g} "
        f"({row['iterations']} iterations), verdict {row['verdict']}; wrote {args.json}"
    )
    return result


if __name__ == "__main__":
    main()
