"""The GPU phasing benchmark runs on CPU with --smoke and writes its JSON."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]


def test_gpu_phasing_smoke(tmp_path):
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "gpu_phasing.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    assert result["smoke"] and result["device"] == "cpu"
    assert result["script"] == "benchmarks/gpu_phasing.py"  # the run's record
    assert result["date"] and "git_sha" in result and len(result["load_before"]) == 3
    row = result["rows"][0]
    assert row["batch"] == 4 and row["iterations"] == 30 and row["patterns_per_s"] > 0
    assert row["median_best_chi2"] < 1.0


def test_cohere_layout_round_trip():
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from phasing import from_cohere_layout, to_cohere_layout

    x = np.random.default_rng(0).standard_normal((64, 64)) + 1j
    z = to_cohere_layout(x)
    assert np.allclose(from_cohere_layout(z), x)
    # cohere's forward transform is ifftn of its layout; it must give our |F|
    ours = np.abs(np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x))))
    theirs = np.abs(np.fft.fftshift(np.fft.ifft2(z, norm="forward")))
    assert np.allclose(ours, theirs)


def test_paired_chi2_ratio_and_interval():
    import numpy as np

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from phasing import paired_chi2

    theirs = np.random.default_rng(1).lognormal(-7.0, 0.5, size=64)
    same = paired_chi2(theirs, theirs)
    assert same["median_ratio"] == 1.0 and same["median_ratio_ci95"] == [1.0, 1.0]
    assert same["fraction_ours_not_worse"] == 1.0
    worse = paired_chi2(1.1 * theirs, theirs)
    assert np.isclose(worse["median_ratio"], 1.1) and worse["fraction_ours_not_worse"] == 0.0
    noisy = paired_chi2(theirs * np.random.default_rng(2).lognormal(0.0, 0.3, 64), theirs)
    low, high = noisy["median_ratio_ci95"]
    assert low < noisy["median_ratio"] < high and high - low > 0.05  # 64 patterns: wide
