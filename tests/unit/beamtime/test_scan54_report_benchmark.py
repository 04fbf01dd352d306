"""``benchmarks/scan54_report.py --smoke``: scan 54's summary row and report figure."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from PIL import Image

ROOT = Path(__file__).resolve().parents[3]


def test_scan54_report_writes_the_row_and_the_figure(scan54, weights_file, tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import scan54_report

    out, image = tmp_path / "r.json", tmp_path / "fig.png"
    argv = ["--data", str(scan54), "--model", str(weights_file), "--smoke", "--threads", "1"]
    result = scan54_report.main(argv + ["--json", str(out), "--image", str(image)])
    stored = json.loads(out.read_text())
    assert stored["row"]["scan"] == "Staff20-1a_S0054" and stored["row"]["status"] == "ok"
    assert stored["row"]["refined_chi2"] == result["row"]["refined_chi2"] > 0
    assert stored["git_sha"] and stored["threads"] == 1 and stored["image"] == "fig.png"
    assert not Path(stored["row"]["source"]).is_absolute()  # no machine paths in the JSON
    with Image.open(image) as png:
        png.load()
        assert png.width > 400 and png.height > 300
