"""Package a ``gpu_train.py`` run as the shipped model: ``platform/cdiflow/pretrained/``.

Reads the run's weights (``--save-weights``) or its checkpoint (``--checkpoint``, for a
run still in progress) and its results JSON, and writes

- ``pretrained/cnn.pt``: the weights with metadata ``val_chi2`` (the run's last
  validation modulus chi^2, the score the champion rule compares) and
  ``eval_fingerprint`` (which patterns that score was measured on);
- ``pretrained/cnn.json``: the model card (how it was trained, what it scored);
- ``benchmarks/results/pretrained_train.json``: the training run's results as written.

    PYTHONPATH=platform python benchmarks/package_pretrained.py \\
        --weights out/pretrain/model.pt --result out/pretrain/result.json
    PYTHONPATH=platform python benchmarks/package_pretrained.py \\
        --rescore platform/cdiflow/pretrained/cnn.json     # after a preset changes
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT / "platform"))

from cdiflow import pretrained  # noqa: E402
from cdiflow.formats.atomic import atomic_write_json  # noqa: E402
from cdiflow.models import ModelConfig, build_model, load_weights, save_weights  # noqa: E402
from cdiflow.physics.generator import GeneratorConfig  # noqa: E402
from cdiflow.pipelines.tracking_store import git_sha  # noqa: E402

MAX_BYTES = 8 * 2**20


PRESETS = {"paper": GeneratorConfig(), "realistic": GeneratorConfig.realistic()}


def validation_fingerprint(seed: int, start: int, count: int, preset: str = "paper") -> str:
    """Names the validation patterns of a gpu_train run: generator config, seed, indices."""
    config = json.dumps(PRESETS[preset].to_dict(), sort_keys=True).encode()
    digest = hashlib.sha256(config).hexdigest()[:16]
    return f"generator:{digest}:seed={seed}:indices={start}-{start + count - 1}"


def test_sets(seed: int, patterns: int) -> dict:
    """Per preset, the fingerprint of the held-out patterns ``scores_by_preset`` scores."""
    return {name: validation_fingerprint(seed, 0, patterns, name) for name in PRESETS}


def rescore(card_path: Path, patterns: int) -> dict:
    """A shipped card's ``test_by_preset`` measured again with today's presets (after a
    preset changes), everything else kept; the card names the patterns (``test_sets``)."""
    card = json.loads(card_path.read_text())
    model, _config, _meta = load_weights(card_path.parent / card["weights"])
    seed = card["training"]["args"]["seed"]
    card["test_by_preset"] = scores_by_preset(model.eval(), seed, patterns)
    card["test_sets"] = test_sets(seed, patterns)
    atomic_write_json(card_path, card)
    print(f"rescored {card_path.name}: {card['test_by_preset']}")
    return card


def _shown(path: Path) -> str:
    """A repository-relative path where it is one (the card must not name this machine)."""
    path = path.resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else path.name


def model_from(args, result: dict):
    config = ModelConfig.from_dict(result["model_config"])
    if args.weights:
        model, loaded, _ = load_weights(args.weights)
        assert loaded == config, "weights and results JSON disagree on the architecture"
        return model, config
    state = torch.load(args.checkpoint, map_location="cpu", weights_only=True)
    model = build_model(config)
    model.load_state_dict(state["model"])
    return model.eval(), config


def scores_by_preset(model, seed: int, patterns: int) -> dict:
    """Mean test chi^2 (modulus, amplitude, phase, twin-aware) on both presets' held-out
    patterns (indices 0.., never trained on), as ``gpu_train.py`` scores them."""
    from cdiflow.losses import LossWeights
    from cdiflow.train.data import generate_tensors, ordered_batches
    from cdiflow.train.loop import evaluate

    out = {}
    for name, config in PRESETS.items():
        data = generate_tensors(config, seed, range(patterns))
        metrics = evaluate(model, ordered_batches(data, 250), "cpu", LossWeights())
        out[name] = {k: v for k, v in metrics.items() if k.startswith("chi2_")}
        out[name]["patterns"] = patterns
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--weights", help="gpu_train --save-weights file")
    p.add_argument("--checkpoint", help="gpu_train --checkpoint file (instead of --weights)")
    p.add_argument("--result", help="gpu_train --out JSON (required unless --rescore)")
    p.add_argument(
        "--rescore",
        metavar="CARD",
        help="only measure a shipped card's test_by_preset again on today's presets",
    )
    p.add_argument("--out", default=str(pretrained.WEIGHTS))
    p.add_argument("--train-json", default=str(HERE / "results" / "pretrained_train.json"))
    p.add_argument(
        "--trained-at",
        help="git SHA the run was trained at (default: the results JSON's, else HEAD)",
    )
    p.add_argument(
        "--previous-card",
        help="the card of the model this run started from (gpu_train --init-weights): its "
        "training is kept in the new card as the earlier leg",
    )
    p.add_argument("--test-patterns", type=int, default=1000, help="per preset, for the card")
    p.add_argument("--note", help="one sentence on this leg, kept in the card's training")
    p.add_argument(
        "--scores",
        default="benchmarks/results/pretrained.json",
        help="where pretrained_eval.py writes this model's scores (named in the card; '' : "
        "none, the card's test_by_preset is its score)",
    )
    args = p.parse_args(argv)
    if args.rescore:
        return rescore(Path(args.rescore), args.test_patterns)
    if not args.result:
        p.error("--result is required (the gpu_train --out JSON)")
    result = json.loads(Path(args.result).read_text())
    model, config = model_from(args, result)
    run = result["args"]
    last = result["final_val"] if "final_val" in result else result["history"][-1]
    metadata = {
        "val_chi2": float(last["val_chi2_modulus"]),
        "eval_fingerprint": validation_fingerprint(
            run["seed"], 1000, run["val_patterns"], run.get("preset", "paper")
        ),
        "preset": run.get("preset", "paper"),
        "trained_by": "benchmarks/gpu_train.py",
        "device": result.get("device", "unknown"),
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(out, model, config, metadata)
    size = out.stat().st_size
    if size > MAX_BYTES:
        raise SystemExit(f"{out} is {size} bytes, above the 8 MiB limit for shipped weights")
    card = {
        "weights": out.name,
        "weights_sha256": hashlib.sha256(out.read_bytes()).hexdigest(),
        "bytes": size,
        "model_config": config.to_dict(),
        "metadata": metadata,
        "training": {
            "script": "benchmarks/gpu_train.py",
            "args": run,
            "device": result.get("device"),
            "train_seconds": result.get("train_seconds"),
            "steps": last.get("steps"),
            "final_validation": {k: v for k, v in last.items() if k.startswith("val_chi2")},
            "results": _shown(Path(args.train_json)),
            "git_sha": args.trained_at or result.get("git_sha") or git_sha(ROOT),
        },
        "test_by_preset": scores_by_preset(model, run["seed"], args.test_patterns),
        "test_sets": test_sets(run["seed"], args.test_patterns),
        "scores": (
            f"{args.scores} (benchmarks/pretrained_eval.py)" if args.scores else "test_by_preset"
        ),
    }
    if args.note:
        card["training"]["note"] = args.note
    if args.previous_card:
        earlier = json.loads(Path(args.previous_card).read_text())
        card["training"]["previous"] = earlier["training"]
    atomic_write_json(out.with_suffix(".json"), card)
    atomic_write_json(args.train_json, result)
    print(f"wrote {out} ({size / 2**20:.2f} MiB) and its card; val chi2 {metadata['val_chi2']:.4f}")
    return card


if __name__ == "__main__":
    main()
