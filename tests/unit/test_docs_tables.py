"""benchmarks/docs_tables.py: the docs' measured tables are the JSON's, and follow it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import docs_tables

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


def test_the_docs_are_built_from_the_results():
    assert docs_tables.main(["--check"]) == 0, "run: python benchmarks/docs_tables.py"


def test_a_changed_result_changes_the_page_and_a_rebuild_fixes_it(tmp_path):
    docs, results = tmp_path / "docs", tmp_path / "results"
    docs.mkdir()
    shutil.copy(ROOT / "docs" / "phasing.md", docs / "phasing.md")
    shutil.copytree(RESULTS, results)
    args = ["--docs", str(docs), "--results", str(results)]
    assert docs_tables.main([*args, "--check"]) == 0
    mode = json.loads((results / "phasing_1thread.json").read_text())
    mode["sizes"][0]["cohere"]["patterns_per_s"] *= 1.37  # a different cohere-core rate
    (results / "phasing_1thread.json").write_text(json.dumps(mode))
    assert docs_tables.main([*args, "--check"]) == 1
    assert docs_tables.main(args) == 0
    assert docs_tables.main([*args, "--check"]) == 0
    assert (ROOT / "docs" / "phasing.md").read_text() != (docs / "phasing.md").read_text()


def test_a_missing_mode_file_says_so(tmp_path):
    text = docs_tables.phasing_modes(lambda name: None)
    assert text.count("not measured yet") == len(docs_tables.MODES)
