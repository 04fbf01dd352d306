"""benchmarks/cnn_sweep.py: a tiny sweep runs, and the docs table is built from its JSON."""

from __future__ import annotations

import json

import cnn_sweep


def test_smoke_sweep_ranks_by_accuracy_per_flop_and_fills_the_docs_table(tmp_path):
    out = tmp_path / "sweep.json"
    result = cnn_sweep.main(["--smoke", "--out", str(out), "--parallel", "2"])
    assert json.loads(out.read_text()) == result
    assert [r["name"] for r in result["rows"]] == ["w8-d3", "w16-d3"]
    for row in result["rows"]:
        assert set(row["test"]) == {"paper", "realistic"}
        assert row["twin_aware_amplitude_x_gflop"] == (
            row["test"]["paper"]["chi2_amplitude_twin_aware"] * row["gflop_per_pattern"]
        )
    best = min(result["rows"], key=lambda r: r["twin_aware_amplitude_x_gflop"])
    assert result["best_by_accuracy_per_flop"] == best["name"]
    doc = tmp_path / "training.md"
    doc.write_text(f"intro\n{cnn_sweep.BEGIN}\nold\n{cnn_sweep.END}\nafter\n")
    cnn_sweep.write_docs(result, doc)
    text = doc.read_text()
    assert "old" not in text and text.startswith("intro") and text.endswith("after\n")
    for row in result["rows"]:
        assert f"| {row['name']} | {row['gflop_per_pattern']:.3f} | {row['steps']} |" in text
