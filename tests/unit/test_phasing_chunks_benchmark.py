"""benchmarks/phasing_chunks.py runs end to end (--smoke): both ways give one answer."""

from __future__ import annotations

import json

import phasing_chunks


def test_smoke_run_times_whole_and_chunked_with_the_same_answers(tmp_path):
    out = tmp_path / "c.json"
    phasing_chunks.main(["--smoke", "--out", str(out)])
    result = json.loads(out.read_text())
    assert result["script"] == "benchmarks/phasing_chunks.py" and "load_after" in result
    assert set(result["modes"]) == set(phasing_chunks.MODES)
    for mode in result["modes"].values():
        assert mode["same_chi2"] is True
        rates = mode["median_patterns_per_s"]
        assert rates["whole"] > 0 and rates["chunked"] > 0
        assert abs(mode["speedup_chunked_vs_whole"] - rates["chunked"] / rates["whole"]) < 1e-9
    assert result["modes"]["1 thread"]["chunk"] < result["args"]["patterns"]  # it chunked
