"""The CPU phasing benchmark runs in seconds with --smoke and writes the keys readers use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
LEGACY = ("ours", "fft_only_patterns_per_s", "load_average_before", "torch_threads", "schedule")


def test_phasing_benchmark_smoke(tmp_path):
    out = tmp_path / "phasing.json"
    proc = subprocess.run(
        [
            sys.executable, str(ROOT / "benchmarks" / "phasing.py"), "--smoke",
            "--cohere-patterns", "0", "--baseline", "HEAD", "--out", str(out),
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    result = json.loads((tmp_path / "phasing_1thread.json").read_text())  # the smoke's mode
    assert all(key in result for key in LEGACY)
    assert result["smoke"] and result["machine"]["cpu_count"] >= 1 and "date" in result
    assert "pynx" in result and len(result["modes"]) == 1
    sizes = {s["size"]: s for s in result["modes"][0]["sizes"]}
    assert set(sizes) == {64, 128}
    for s in sizes.values():
        assert all(r["patterns_per_s"] > 0 for r in s["ours"])
        assert str(s["ours"][0]["batch"]) in s["fft_only_patterns_per_s"]
        assert s["ours_chi2_every_10"]["chi2_every"] == 10
        # the same patterns and starts through the same code: the same chi^2
        assert s["ours_chi2_every_10"]["final_chi2"] == s["ours"][-1]["final_chi2"]
    assert {r["batch"] for r in result["ours"]} >= {1}
