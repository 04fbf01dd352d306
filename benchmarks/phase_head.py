"""Where a CNN's phase error lies, and what the angle phase head changes.

For each weights file, on held-out patterns of the paper's generator (indices ``--first``
.. + ``--patterns``-1 at seed 0: 0.. are the test patterns, 1000.. the validation ones
that choose a gate width; training draws from 10**7 up), in one process:

- the twin-aware errors (``cdiflow.train.loop.per_pattern_metrics``, means);
- the twin-aware phase error split by pixel: inside the support on the circle (the phase
  itself), the excess of wrap-line pixels (prediction and target a turn apart), and the
  gate (support pixels the prediction gives p = 0, and pixels outside it given p > 0);
- the object's own errors after twin, shift and global phase
  (``cdiflow.metrics.aligned_errors``: amplitude error, phase rms in radians inside the
  true support), on the first ``--aligned`` patterns;
- for a model with the angle head, the same at each ``--gate-widths`` value of
  ``ModelConfig.phase_gate_width`` (the weights are the same; only the gate changes).

    PYTHONPATH=platform python benchmarks/phase_head.py A.pt B.pt --out results/phase_head.json
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import sys
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "platform"))
sys.path.insert(0, str(HERE))

from cdiflow.formats.atomic import atomic_write_json  # noqa: E402
from cdiflow.metrics import aligned_errors, image_error  # noqa: E402
from cdiflow.models import load_weights  # noqa: E402
from cdiflow.models.cnn import PhaseRetrievalCNN  # noqa: E402
from cdiflow.physics.farfield import object_from_targets, twin_targets  # noqa: E402
from cdiflow.physics.generator import GeneratorConfig, generate_samples  # noqa: E402
from cdiflow.train.loop import per_pattern_metrics  # noqa: E402
from run_record import run_record  # noqa: E402


def parse_args(argv):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("weights", nargs="+", help="weights files (.pt) to compare")
    p.add_argument("--patterns", type=int, default=1000)
    p.add_argument(
        "--first", type=int, default=0, help="first index (1000: the validation patterns)"
    )
    p.add_argument("--aligned", type=int, default=256, help="patterns for aligned_errors")
    p.add_argument("--gate-widths", default="0,0.05,0.1,0.15", help="angle head ramps")
    p.add_argument("--batch", type=int, default=250)
    p.add_argument("--out", default=str(HERE / "results" / "phase_head.json"))
    return p.parse_args(argv)


def phase_split(pred: torch.Tensor, amp: torch.Tensor, phase: torch.Tensor) -> dict:
    """The twin-aware phase error's parts (means over patterns; they sum to the total)."""
    pa, pp = pred[:, 0], pred[:, 1]
    ta, tp = twin_targets(amp, phase)
    use = image_error(pa, ta) + image_error(pp, tp) < image_error(pa, amp) + image_error(pp, phase)
    target = torch.where(use[:, None, None], tp, phase)
    diff = pp - target
    den = (target * target).sum((-2, -1))
    inside, given = target > 0, pp > 0
    wrapped = diff - torch.round(diff)

    def part(mask, d=diff):
        return float(((d * d * mask).sum((-2, -1)) / den).mean())

    both = inside & given
    return {
        "total": part(torch.ones_like(inside)),
        "support_on_circle": part(both, wrapped),
        "wrap_lines": part(both) - part(both, wrapped),
        "gate_support_given_zero": part(inside & ~given),
        "gate_outside_given_phase": part(~inside & given),
        "wrap_line_pixels_per_pattern": float(
            (both & (diff.abs() > 0.5)).sum((-2, -1)).double().mean()
        ),
    }


def score(model: PhaseRetrievalCNN, data: dict, aligned: int, batch: int) -> dict:
    model.eval()
    n = data["modulus"].shape[0]
    batches = [{k: v[a : a + batch] for k, v in data.items()} for a in range(0, n, batch)]
    metrics = per_pattern_metrics(model, batches, "cpu")
    with torch.no_grad():
        pred = torch.cat([model(b["modulus"]) for b in batches])
    truth = object_from_targets(data["amplitude"][:aligned], data["phase"][:aligned])
    errors = aligned_errors(object_from_targets(pred[:aligned, 0], pred[:aligned, 1]), truth)
    spread = {k: {"mean": float(v.mean()), "median": float(v.median())} for k, v in errors.items()}
    return {
        "twin_aware": {k: float(v.double().mean()) for k, v in metrics.items()},
        "phase_split": phase_split(pred, data["amplitude"], data["phase"]),
        "aligned": spread,
    }


def with_gate(model: PhaseRetrievalCNN, width: float) -> PhaseRetrievalCNN:
    config = dataclasses.replace(model.config, phase_gate_width=width)
    out = PhaseRetrievalCNN(config)
    out.load_state_dict(model.state_dict())
    return out


def main(argv=None) -> dict:
    args = parse_args(argv)
    record = run_record("phase_head.py")
    s = generate_samples(GeneratorConfig(), 0, np.arange(args.first, args.first + args.patterns))
    data = {k: torch.from_numpy(getattr(s, k)) for k in ("modulus", "amplitude", "phase")}
    rows = []
    for path in args.weights:
        model, config, _meta = load_weights(path)
        widths = [float(w) for w in args.gate_widths.split(",")]
        for width in widths if config.phase_head == "angle" else [None]:
            m = model if width is None else with_gate(model, width)
            row = {"weights": Path(path).name, "phase_head": config.phase_head}
            row["sha256"] = hashlib.sha256(Path(path).read_bytes()).hexdigest()
            row["phase_gate_width"] = width
            row.update(score(m, data, min(args.aligned, args.patterns), args.batch))
            rows.append(row)
            t, sp = row["twin_aware"], row["phase_split"]
            print(
                f"{row['weights']} {config.phase_head} gate {width}: modulus "
                f"{t['chi2_modulus']:.4f} amp {t['chi2_amplitude_twin_aware']:.4f} phase "
                f"{t['chi2_phase_twin_aware']:.4f} | on circle {sp['support_on_circle']:.4f}"
                f" wrap {sp['wrap_lines']:.4f} | aligned phase rms "
                f"{row['aligned']['phase_rms']['median']:.3f} rad"
            )
    result = {
        **record,
        "first_index": args.first,
        "patterns": args.patterns,
        "aligned_patterns": args.aligned,
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result)
    return result


if __name__ == "__main__":
    main()
