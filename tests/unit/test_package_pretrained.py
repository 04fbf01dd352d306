"""benchmarks/package_pretrained.py: a run becomes weights plus a card with both presets'
scores, the training SHA and the earlier leg of a warm-restarted run."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_warm_restarted_run_is_packaged_with_both_legs_and_both_presets(tmp_path):
    train, package = _load("gpu_train"), _load("package_pretrained")
    weights, result = tmp_path / "w.pt", tmp_path / "r.json"
    train.main(["--smoke", "--out", str(result), "--save-weights", str(weights)])
    earlier = {"training": {"script": "benchmarks/gpu_train.py", "train_seconds": 12.0}}
    (tmp_path / "old.json").write_text(json.dumps(earlier))
    card = package.main([
        "--weights", str(weights), "--result", str(result), "--out", str(tmp_path / "cnn.pt"),
        "--train-json", str(tmp_path / "train.json"), "--test-patterns", "8",
        "--previous-card", str(tmp_path / "old.json"),
    ])  # fmt: skip
    assert json.loads((tmp_path / "cnn.json").read_text()) == card
    assert card["training"]["previous"] == earlier["training"]
    assert card["training"]["git_sha"] == json.loads(result.read_text())["git_sha"]
    for preset in ("paper", "realistic"):
        scores = card["test_by_preset"][preset]
        assert scores["patterns"] == 8 and scores["chi2_modulus"] > 0
    assert card["test_by_preset"]["paper"] != card["test_by_preset"]["realistic"]
