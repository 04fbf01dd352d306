"""The README's measured sections are the ones the benchmark JSON builds (never typed)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "readme_tables.py"
RESULTS = ROOT / "benchmarks" / "results"


def _module():
    spec = importlib.util.spec_from_file_location("readme_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif(not (RESULTS / "pretrained.json").is_file(), reason="no results yet")
def test_readme_sections_match_the_json():
    assert _module().main(["--check"]) == 0, "run: python benchmarks/readme_tables.py"


@pytest.mark.skipif(not (RESULTS / "pretrained.json").is_file(), reason="no results yet")
def test_a_changed_measurement_makes_the_readme_stale(tmp_path):
    module = _module()
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    assert module.main(["--readme", str(readme), "--check"]) == 0
    evaluation = json.loads((RESULTS / "pretrained.json").read_text())
    fits = evaluation["test"]["gamma_fits"]["modulus"]
    fits["mean"] *= 2  # what a different run would have measured
    module.RESULTS = tmp_path
    for name in ("pretrained_train.json", "cnn_schedule.json", "scan54.json"):
        if (RESULTS / name).is_file():
            (tmp_path / name).write_text((RESULTS / name).read_text())
    (tmp_path / "pretrained.json").write_text(json.dumps(evaluation))
    assert module.main(["--readme", str(readme), "--check"]) == 1
    assert module.main(["--readme", str(readme)]) == 0  # rebuilt, it matches again
    assert module.main(["--readme", str(readme), "--check"]) == 0
    assert f"{fits['mean']:.3f}" in readme.read_text()
