"""benchmarks/nns.py runs at a tiny size and its JSON starts with the run record."""

from __future__ import annotations

import json

import nns as nns_benchmark


def test_tiny_run_writes_the_record_and_a_row(tmp_path):
    out = tmp_path / "nns.json"
    argv = ["--references", "64", "--queries", "4", "--binnings", "2", "--out", str(out)]
    assert nns_benchmark.main(argv) == 0
    result = json.loads(out.read_text())
    assert result["script"] == "benchmarks/nns.py"
    assert result["date"] and "git_sha" in result and len(result["load_before"]) == 3
    row = result["rows"][0]  # the keys readme_rows reads
    assert row["binning"] == 2 and row["references"] == 64 and row["queries"] == 4
    assert row["ms_per_query"] > 0 and result["k"] == 8
