"""Real scan 54 (APS 34-ID-C) refined at 64 x 64 and at native size (issue 13).

The scan is read, preprocessed, predicted and refined exactly as the beamtime job does
(``cdiflow.beamtime.steps``: four starts per scan, the paper's 600 ER/HIO
iterations with shrink-wrap, the run of least chi^2 kept, a verdict), once per case:

- ``64``: the CNN's 64 x 64 pattern (the window and binning chosen from the measured
  oversampling: crop 64, bin 1 on this scan), the CNN start;
- ``native``: the detector's 256 x 256 pixels, the CNN guess upsampled with its support;
- ``native-blind``: 256 x 256 from the autocorrelation support (no CNN);
- ``crop128-bin2``: the old fixed window (crop 128, bin 2) at 64 x 64, for reference.

chi^2 is over the pattern each case refines, so cases with different windows measure
fits to different data: compare each with its own starts' spread and verdict.
Writes ``--json`` with machine, date, load, threads and git SHA.

    python benchmarks/scan54_native.py --threads 2
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform as host
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "aps-34idc-scan54"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="scan 54 beamtime folder")
    p.add_argument("--model", default="pretrained", help="weights file or 'pretrained'")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--schedule", default="5*(100*HIO+20*ER)")
    p.add_argument("--cases", default="64,native,native-blind,crop128-bin2")
    p.add_argument("--device", default="cpu")
    p.add_argument(
        "--json", type=Path, default=REPO / "benchmarks" / "results" / "scan54_native.json"
    )
    return p.parse_args(argv)


def case_config(name: str, schedule: str):
    from cdiflow.beamtime.preprocess import PreprocessConfig
    from cdiflow.beamtime.steps import ReconstructConfig

    base = ReconstructConfig(schedule=schedule)
    if name == "64":
        return base
    if name == "native":
        return base.replace(preprocess=PreprocessConfig(refine_size="native"))
    if name == "native-blind":
        return base.replace(
            start="autocorrelation", preprocess=PreprocessConfig(refine_size="native")
        )
    if name == "crop128-bin2":
        return base.replace(preprocess=PreprocessConfig(crop=128, bin=2))
    raise SystemExit(f"unknown case {name!r}")


def run_case(name, item, model, schedule, device) -> dict:
    from cdiflow.beamtime.steps import (
        batch_to_rows,
        predict_batch,
        read_and_preprocess,
        refine_batch,
        rows_to_batch,
    )

    config = case_config(name, schedule)
    t0 = time.perf_counter()
    row = read_and_preprocess(item, config)
    t_pre = time.perf_counter() - t0
    if row["status"] != "ok":
        return {"status": "failed", "reason": row["reason"]}
    batch = predict_batch(model, rows_to_batch([row]), device=device)
    t1 = time.perf_counter()
    (done,) = batch_to_rows(refine_batch(batch, config, device))
    t_refine = time.perf_counter() - t1
    params = json.loads(done["parameters"])
    keys = ("refined_chi2", "cnn_chi2", "verdict", "consensus_error", "support_fraction")
    out = {k: done[k] for k in keys}
    out.update(
        status=done["status"],
        reason=done["reason"],
        chi2_converged=bool(done["chi2_converged"]),
        refine_size=int(done["refine_size"]),
        upper_bound=int(done["upper_bound"]),
        cnn_window={k: params[k] for k in ("crop", "bin", "oversampling")},
        refine_window={k: params["refine"][k] for k in ("crop", "bin", "size", "oversampling")},
        centre=params["centre"],
        masked_fraction=params["masked_fraction"],
        preprocess_seconds=t_pre,
        refine_seconds=t_refine,
        starts=config.starts,
        start=config.start,
    )
    print(
        f"{name:13s} R={out['refine_size']:4d} refined chi2 {out['refined_chi2']:.3e} "
        f"{out['verdict']}  consensus {out['consensus_error']:.3f}  {t_refine:.1f} s",
        flush=True,
    )
    return out


def main(argv=None) -> int:
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from cdiflow.beamtime.steps import plan_scans
    from cdiflow.formats.atomic import atomic_write_json
    from cdiflow.models import inference_model
    from cdiflow.pipelines.tracking import git_sha, load_model, model_reference

    if not (args.data / "example.spec").is_file():
        print(f"scan 54 data not found at {args.data}; nothing to measure", file=sys.stderr)
        return 2
    ref = model_reference(args.model)
    model, _, _ = load_model(ref, None)
    model = inference_model(model).to(args.device)
    items = [i for i in plan_scans([args.data]) if i["number"] == 54]
    cases = {}
    with torch.inference_mode():
        for name in args.cases.split(","):
            cases[name] = run_case(name, items[0], model, args.schedule, args.device)
    report = {
        "scan": items[0]["scan"],
        "schedule": args.schedule,
        "cases": cases,
        "model": Path(ref).name,
        "git_sha": git_sha(REPO),
        "date_utc": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": f"{host.machine()}, {os.cpu_count()} cores visible",
        "device": args.device,
        "torch_threads": args.threads,
        "loadavg": list(os.getloadavg()),
        "note": "chi2 is over each case's own pattern (different windows: different data)",
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, report, indent=1, default=str)
    print(f"wrote {args.json.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
