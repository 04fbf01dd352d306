"""Real scan 54 (APS 34-ID-C): CNN chi^2, and refinement from random vs CNN starts.

The scan is read and preprocessed exactly as the beamtime job does
(``cdiflow.beamtime.steps``), the CNN predicts once, then the same phasing engine
refines from (one batch each, same schedule, same upper bound):

- ``random-rectangle``: random phase in the 32 x 32 box (the paper's start (i); the
  start cohere-core's reference run used), one run per seed;
- ``random-cnn-support``: random phase inside the CNN support (start (ii)), per seed;
- ``cnn``: CNN phase + support (start (iii), the job's default; deterministic, so one
  run: its spread over seeds is zero by construction);
- ``cnn-jitter``: CNN phase + support with uniform phase noise of +-``--jitter`` rad
  added per seed: how robust the CNN start is to a perturbed prediction.

Prints and writes (``--json``) mean / std / min / max of the refined chi^2 per start,
and the CNN's own chi^2 (scale fitted). Goal: <= 1.5e-3 with less spread than random
starts. cohere-core's side of this scan is not measured here (it is an optional
benchmark dependency, ``pip install -e .[bench]``); no number of it is typed in.
``--images DIR`` saves the amplitude and unwrapped phase of the CNN-start result as
PNG. ``--smoke``: 2 seeds and a short schedule (CI).

    python benchmarks/scan54.py --model models:/cdiflow-cnn@champion --workspace WS
    python benchmarks/scan54.py --model cnn.pt --images docs/images
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATA = REPO.parent / "shared" / "data" / "aps-34idc-scan54"


def parse_args(argv=None):
    from cdiflow.commands.common import add_model, add_workspace

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="scan 54 beamtime folder")
    add_model(p, when_omitted="champion")
    add_workspace(p)
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--schedule", default="5*(100*HIO+20*ER)", help="default: the paper's")
    p.add_argument("--upper-bound", type=int, default=0, help="0: automatic (the job's rule)")
    p.add_argument("--jitter", type=float, default=0.5, help="cnn-jitter phase noise, rad")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, default=REPO / "benchmarks" / "results" / "scan54.json")
    p.add_argument("--images", type=Path, help="write amplitude / phase PNGs here")
    p.add_argument("--smoke", action="store_true", help="2 seeds, short schedule")
    return p.parse_args(argv)


def stats(values: np.ndarray) -> dict:
    v = np.asarray(values, np.float64)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "runs": [float(x) for x in v],
    }


def jittered_cnn_start(amplitude, target, seeds, jitter, threshold):
    """CNN start with per-seed uniform phase noise in [-jitter, jitter] rad."""
    from cdiflow.phasing.starts import Start, cnn_start, torch_generator

    base = cnn_start(amplitude, target, threshold=threshold)
    objects = []
    for seed in seeds:
        g = torch_generator(int(seed))
        noise = (2 * torch.rand(base.object.shape[1:], generator=g) - 1) * jitter
        objects.append(base.object[0] * torch.exp(1j * noise))
    obj = torch.stack(objects)
    return Start(obj, base.support.expand(len(seeds), -1, -1).clone(), "cnn-jitter")


def load_cnn(ref: str | None, workspace: Path):
    from cdiflow.pipelines.tracking import configure, load_model, model_reference

    text = model_reference(ref)
    uri = configure(workspace) if text.startswith("models:/") else None
    model, config, provenance = load_model(text, uri)
    # no local paths in the JSON (it is committed): where a model came from is its ref
    kept = {k: v for k, v in provenance.items() if k in ("name", "version", "run_id", "aliases")}
    kept["ref"] = Path(text).name if not text.startswith("models:/") else text
    kept["config"] = config.to_dict()
    return model.eval(), kept


def main(argv=None) -> int:
    load_before = list(os.getloadavg())
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from cdiflow.beamtime.steps import (
        ReconstructConfig,
        object_images,
        plan_scans,
        predict_batch,
        read_and_preprocess,
        rows_to_batch,
        unwrapped_phase,
        upper_bound_side,
    )
    from cdiflow.phasing.refine import refine
    from cdiflow.phasing.shrinkwrap import square_support
    from cdiflow.phasing.starts import random_phase_cnn_support, random_phase_rectangle
    from run_record import run_record

    if not (args.data / "example.spec").is_file():
        print(f"scan 54 data not found at {args.data}; nothing to measure", file=sys.stderr)
        return 2
    seeds = list(range(2 if args.smoke else args.seeds))
    schedule = "2*(40*HIO+20*ER)" if args.smoke else args.schedule
    config = ReconstructConfig(schedule=schedule, upper_bound=args.upper_bound)
    items = [i for i in plan_scans([args.data]) if i["number"] == 54]
    t0 = time.perf_counter()
    row = read_and_preprocess(items[0], config)
    t_read = time.perf_counter() - t0
    if row["status"] != "ok":
        print(f"scan 54 failed: {row['reason']}", file=sys.stderr)
        return 1
    model, model_info = load_cnn(args.model, args.workspace)
    batch = predict_batch(model, rows_to_batch([row]))
    cnn_chi2 = float(batch["cnn_chi2"][0])
    side = upper_bound_side(config, (row["object_extent_y"], row["object_extent_x"]))
    modulus = torch.from_numpy(row["modulus"])
    mask = torch.from_numpy(row["mask"])
    amp, target = batch["cnn_amplitude"], batch["cnn_phase"]
    thr = config.support_threshold

    starts = {
        "random-rectangle": lambda: _cat(random_phase_rectangle(1, s) for s in seeds),
        "random-cnn-support": lambda: _cat(random_phase_cnn_support(amp, s, thr) for s in seeds),
        "cnn": lambda: _cnn(amp, target, thr),
        "cnn-jitter": lambda: jittered_cnn_start(amp, target, seeds, args.jitter, thr),
    }
    results, best = {}, None
    for name, make in starts.items():
        start = make()
        t = time.perf_counter()
        result = refine(
            modulus.expand(len(start), -1, -1),
            start,
            schedule,
            mask=mask,
            shrinkwrap=config.shrinkwrap,
            upper_bound=square_support(64, side),
        )
        seconds = time.perf_counter() - t
        chi2 = result.best_chi2.numpy()
        failed = [str(e) for e in result.errors if e is not None]
        results[name] = {**stats(chi2[np.isfinite(chi2)]), "seconds": seconds, "errors": failed}
        s = results[name]
        print(
            f"{name:19s} refined chi2 {s['mean']:.3e} +- {s['std']:.1e} "
            f"(min {s['min']:.3e}, max {s['max']:.3e}, {len(chi2)} run(s), {seconds:.1f} s)"
        )
        if name == "cnn":
            best = result
    print(f"CNN alone: chi2 {cnn_chi2:.3f} (scale fitted); upper bound {side} px")
    load = os.getloadavg()
    report = {
        **run_record("scan54.py", load_before),  # git_sha and machine: as below, as before
        "scan": row["scan"],
        "cnn_chi2": cnn_chi2,
        "refined": results,
        "schedule": schedule,
        "upper_bound": side,
        "seeds": seeds,
        "jitter_rad": args.jitter,
        "oversampling": [row["oversampling_y"], row["oversampling_x"]],
        "model": model_info,
        "git_sha": _git_sha(),
        "machine": f"{os.cpu_count()} cores",
        "goal": "refined chi2 <= 1.5e-3 with less spread than random starts",
        "read_preprocess_seconds": t_read,
        "torch_threads": args.threads,
        "loadavg": list(load),
        "smoke": args.smoke,
    }
    from cdiflow.formats.atomic import atomic_write_json

    args.json.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.json, report, indent=1, default=str)
    print(f"wrote {args.json}")
    if args.images and best is not None:
        _save_images(args.images, best, side, object_images, unwrapped_phase)
    return 0


def _git_sha() -> str | None:
    from cdiflow.pipelines.tracking import git_sha

    return git_sha(REPO)


def _cat(starts):
    from cdiflow.phasing.starts import Start

    starts = list(starts)
    obj = torch.cat([s.object for s in starts])
    return Start(obj, torch.cat([s.support for s in starts]), starts[0].name)


def _cnn(amp, target, thr):
    from cdiflow.phasing.starts import cnn_start

    return cnn_start(amp, target, threshold=thr)


def _save_images(folder: Path, result, side: int, object_images, unwrapped_phase) -> None:
    from cdiflow.beamtime.report import save_image

    amplitude, phase, support = object_images(result.obj[:1], result.support[:1], side)
    # show the box the object occupies (support bounding box plus a margin)
    rows = np.flatnonzero(support[0].any(1))
    cols = np.flatnonzero(support[0].any(0))
    r0, r1 = max(rows[0] - 3, 0), min(rows[-1] + 4, support.shape[1])
    c0, c1 = max(cols[0] - 3, 0), min(cols[-1] + 4, support.shape[2])
    view = (slice(r0, r1), slice(c0, c1))
    folder.mkdir(parents=True, exist_ok=True)
    amp = amplitude[0] / max(float(amplitude[0].max()), 1e-12)
    # phase where the particle is (amplitude >= 20% of its maximum): at the weak edge
    # the phase is noise, and a few such pixels would set the colour scale
    inside = support[0] & (amp >= 0.2)
    unwrapped = unwrapped_phase(phase[0], inside)[view]
    a = save_image(folder / "scan54_amplitude.png", amp[view], "scan 54: amplitude", "gray", "a.u.")
    p = save_image(
        folder / "scan54_phase.png",
        unwrapped,
        "scan 54: unwrapped phase",
        "viridis",
        "rad",
        percentiles=(1.0, 99.0),
    )
    for path in (a, p):
        print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB)")
    assert math.isfinite(float(np.nanmax(unwrapped)))


if __name__ == "__main__":
    sys.exit(main())
