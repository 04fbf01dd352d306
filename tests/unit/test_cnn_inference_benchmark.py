"""benchmarks/cnn_inference.py runs at a tiny size and its JSON starts with the run record."""

from __future__ import annotations

import json

import cnn_inference


def test_tiny_run_writes_the_record_and_a_row(tmp_path, monkeypatch):
    # the 2048^2 matmul baseline takes seconds per call; its value is not under test here
    monkeypatch.setattr(cnn_inference, "matmul_gflops", lambda repeats=5: 10.0)
    out = tmp_path / "cnn_inference.json"
    argv = ["--widths", "4", "--batch", "2", "--also-batch", "3", "--rounds", "1"]
    cnn_inference.main([*argv, "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["script"] == "benchmarks/cnn_inference.py"
    assert result["date"] and "git_sha" in result and len(result["load_before"]) == 3
    assert len(result["loadavg_before"]) == 3  # the key readme_benchmarks reads stays
    row = result["models"][0]
    assert row["base_width"] == 4 and row["patterns_per_s"] > 0
    assert [r["batch"] for r in row["by_batch"]] == [2, 3]
    # the share is the model's GFLOP/s over the matmul's, at the row's own batch
    assert abs(row["fraction_of_matmul"] - row["gflops_achieved"] / 10.0) < 1e-9
    shipped = result["shipped"]
    assert shipped["weights"] == "pretrained/cnn.pt" and shipped["base_width"] == 16
