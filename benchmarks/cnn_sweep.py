"""Width, depth and optimiser of the CNN by accuracy per FLOP, at one training budget each.

Every configuration of ``GRID`` (the paper's block family: widths and depths of
``PhaseRetrievalCNN``; AdamW against the paper's SGD, one-cycle LR) is trained by
``benchmarks/gpu_train.py`` for the same wall-clock budget on the same generated data,
``--parallel`` at a time, each in its own process with one torch thread, and scored on
the same held-out patterns of both presets (the paper's and the realistic one). The JSON
lists, per configuration, GFLOP per pattern, steps, the test chi^2 and the twin-aware
amplitude error times GFLOP (lower is better: accuracy per FLOP). ``--docs`` rewrites
the table in ``docs/training.md`` between its markers from the JSON.

Equal wall time on a CPU favours small models (more steps); that is the budget a CPU
user has, but on a shared machine the steps it buys vary with the load, so ``--steps N``
trains every configuration for the same N steps (equal samples seen; the FLOP per
pattern then ranks the cost). On a GPU the ranking can differ, so the machine is
recorded with the numbers.

    PYTHONPATH=platform python benchmarks/cnn_sweep.py --steps 600 --parallel 2
    PYTHONPATH=platform python benchmarks/cnn_sweep.py --smoke --out /tmp/s.json
    python benchmarks/cnn_sweep.py --docs           # table only, from the JSON
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from run_record import run_record

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DOC = ROOT / "docs" / "training.md"
BEGIN, END = "<!-- cnn-sweep:begin -->", "<!-- cnn-sweep:end -->"

GRID = (
    {"name": "w8-d3", "width": 8, "depth": 3},
    {"name": "w16-d3", "width": 16, "depth": 3},
    {"name": "w24-d3", "width": 24, "depth": 3},
    {"name": "w16-d4", "width": 16, "depth": 4},
    {"name": "w16-d3-sgd", "width": 16, "depth": 3, "optimizer": "sgd", "lr": 0.05},
)
"""Configurations swept: AdamW + one-cycle at lr 3e-3 unless named otherwise."""


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budget-s", type=float, default=300.0, help="training seconds each")
    p.add_argument(
        "--steps",
        type=int,
        default=0,
        help="train each for exactly this many steps instead (the budget is then only a "
        "cap): equal work on a loaded machine, where equal time is not",
    )
    p.add_argument("--patterns", type=int, default=32768, help="distinct training patterns")
    p.add_argument("--test-patterns", type=int, default=500)
    p.add_argument("--parallel", type=int, default=2, help="configurations at once")
    p.add_argument("--out", default=str(HERE / "results" / "cnn_sweep.json"))
    p.add_argument("--docs", action="store_true", help="only rewrite docs/training.md")
    p.add_argument("--smoke", action="store_true", help="two tiny runs, for tests")
    return p.parse_args(argv)


def _command(args, config: dict, out: Path) -> list[str]:
    cmd = [sys.executable, str(HERE / "gpu_train.py"), "--device", "cpu", "--threads", "1"]
    cmd += ["--workers", "0", "--out", str(out), "--target-chi2", "0", "--twin-invariant"]
    if args.smoke:
        return [*cmd, "--smoke", "--width", str(config["width"])]
    cmd += ["--width", str(config["width"]), "--depth", str(config["depth"])]
    cmd += ["--optimizer", config.get("optimizer", "adamw"), "--lr", str(config.get("lr", 3e-3))]
    cmd += ["--budget-s", str(args.budget_s), "--batch-size", "64", "--eval-every", "500"]
    cmd += ["--max-steps", str(args.steps)]
    cmd += ["--initial-patterns", str(args.patterns), "--max-patterns", str(args.patterns)]
    return [*cmd, "--test-patterns", str(args.test_patterns)]


def run_one(args, config: dict, folder: Path) -> dict:
    out = folder / f"{config['name']}.json"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT / "platform"))
    done = subprocess.run(_command(args, config, out), env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{config['name']} failed:\n{done.stderr[-2000:]}")
    r = json.loads(out.read_text())
    row = {**config, "gflop_per_pattern": r["gflop_per_pattern"], "steps": r["final_val"]["steps"]}
    row["train_seconds"] = r["train_seconds"]
    row["inference_patterns_per_s"] = r["inference_patterns_per_s"]["fp32"]
    row["test"] = {
        preset: {k: v for k, v in m.items() if k.startswith("chi2_")}
        for preset, m in r["test_by_preset"].items()
    }
    amp = row["test"]["paper"]["chi2_amplitude_twin_aware"]
    row["twin_aware_amplitude_x_gflop"] = amp * r["gflop_per_pattern"]
    return row


def table(result: dict) -> str:
    lines = [
        f"Measured by `benchmarks/cnn_sweep.py` on {result['machine']}, {result['date'][:10]}, "
        f"load {result['load_before'][0]:.1f}: each configuration trained "
        f"{_budget(result['args'])} (one thread, batch 64, one-cycle LR, AdamW unless "
        "named `-sgd`, "
        f"twin-invariant loss, {result['args']['patterns']:,} patterns of the paper's "
        f"preset), scored on {result['args']['test_patterns']} held-out patterns of each "
        "preset (mean chi^2, not Gamma-fitted).",
        "",
        "| model | GFLOP/pattern | steps | modulus | amplitude (twin-aware) | phase (twin-aware) "
        "| realistic: modulus | amplitude x GFLOP |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in sorted(result["rows"], key=lambda r: r["twin_aware_amplitude_x_gflop"]):
        p, q = row["test"]["paper"], row["test"]["realistic"]
        lines.append(
            f"| {row['name']} | {row['gflop_per_pattern']:.3f} | {row['steps']} "
            f"| {p['chi2_modulus']:.4f} | {p['chi2_amplitude_twin_aware']:.4f} "
            f"| {p['chi2_phase_twin_aware']:.4f} | {q['chi2_modulus']:.4f} "
            f"| {row['twin_aware_amplitude_x_gflop']:.5f} |"
        )
    return "\n".join(lines)


def _budget(args: dict) -> str:
    if args.get("steps"):
        return f"{args['steps']} steps"
    return f"{args['budget_s']:.0f} s"


def write_docs(result: dict, doc: Path = DOC) -> None:
    text = doc.read_text()
    head, rest = text.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    doc.write_text(f"{head}{BEGIN}\n{table(result)}\n{END}{tail}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.docs:
        result = json.loads(Path(args.out).read_text())
        write_docs(result)
        return result
    sys.path.insert(0, str(ROOT / "platform"))
    from cdiflow.formats.atomic import atomic_write_json

    grid = GRID[:2] if args.smoke else GRID
    load_before = list(os.getloadavg())
    # each run's own JSON (which names its paths) stays in a scratch folder; only the
    # rows below are kept
    with tempfile.TemporaryDirectory() as scratch:
        with concurrent.futures.ThreadPoolExecutor(args.parallel) as pool:
            rows = list(pool.map(lambda c: run_one(args, c, Path(scratch)), grid))
    result = {
        **run_record("cnn_sweep.py", load_before),
        "threads": 1,  # per sweep worker
        "parallel": args.parallel,
        "load_after": list(os.getloadavg()),
        "args": {k: v for k, v in vars(args).items() if k not in ("out", "docs")},
        "rows": rows,
        "best_by_accuracy_per_flop": min(rows, key=lambda r: r["twin_aware_amplitude_x_gflop"])[
            "name"
        ],
    }
    atomic_write_json(args.out, result, indent=2)
    for row in rows:
        print(row["name"], row["steps"], row["test"]["paper"])
    return result


if __name__ == "__main__":
    main()
