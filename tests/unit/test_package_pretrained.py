"""benchmarks/package_pretrained.py: a run becomes weights plus a card with both presets'
scores, the training SHA and the earlier leg of a warm-restarted run."""

from __future__ import annotations

import json

import gpu_train
import package_pretrained


def test_a_warm_restarted_run_is_packaged_with_both_legs_and_both_presets(tmp_path):
    weights, result = tmp_path / "w.pt", tmp_path / "r.json"
    gpu_train.main(["--smoke", "--out", str(result), "--save-weights", str(weights)])
    earlier = {"training": {"script": "benchmarks/gpu_train.py", "train_seconds": 12.0}}
    (tmp_path / "old.json").write_text(json.dumps(earlier))
    card = package_pretrained.main([
        "--weights", str(weights), "--result", str(result), "--out", str(tmp_path / "cnn.pt"),
        "--train-json", str(tmp_path / "train.json"), "--test-patterns", "8",
        "--previous-card", str(tmp_path / "old.json"), "--note", "a warm restart",
    ])  # fmt: skip
    assert json.loads((tmp_path / "cnn.json").read_text()) == card
    assert card["training"]["note"] == "a warm restart"
    assert card["training"]["previous"] == earlier["training"]
    assert card["training"]["git_sha"] == json.loads(result.read_text())["git_sha"]
    for preset in ("paper", "realistic"):
        scores = card["test_by_preset"][preset]
        assert scores["patterns"] == 8 and scores["chi2_modulus"] > 0
    assert card["test_by_preset"]["paper"] != card["test_by_preset"]["realistic"]


def test_rescore_measures_a_card_again_and_keeps_the_rest(tmp_path):
    weights, result = tmp_path / "w.pt", tmp_path / "r.json"
    gpu_train.main(["--smoke", "--out", str(result), "--save-weights", str(weights)])
    card = package_pretrained.main([
        "--weights", str(weights), "--result", str(result), "--out", str(tmp_path / "cnn.pt"),
        "--train-json", str(tmp_path / "train.json"), "--test-patterns", "8",
    ])  # fmt: skip
    stale = dict(card, test_by_preset={"paper": {"chi2_modulus": -1.0}})
    (tmp_path / "cnn.json").write_text(json.dumps(stale))
    again = package_pretrained.main(
        ["--rescore", str(tmp_path / "cnn.json"), "--test-patterns", "8"]
    )
    assert again["test_by_preset"] == card["test_by_preset"]  # the same patterns, measured again
    assert again["test_sets"] == card["test_sets"]
    assert set(again["test_sets"]) == {"paper", "realistic"}
    assert again["test_by_preset"] != stale["test_by_preset"]
    assert (
        again["training"] == card["training"] and again["weights_sha256"] == card["weights_sha256"]
    )
