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
    for page in docs_tables.PAGES:
        shutil.copy(ROOT / "docs" / page, docs / page)
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


def test_generation_scaling_rows_join_the_runs_of_each_worker_count():
    runs = [
        {"workers": w, "patterns": 100, "patterns_per_s": rate, "speedup": rate / 500,
         "cpu_ms_per_pattern": 1.5, "cpu_efficiency": 1.0, "cpu_s": 3.0, "wall_s": 2.0}
        for w, rate in ((1, 500), (2, 900), (1, 510), (2, 950))
    ]  # fmt: skip
    result = {"runs": runs, "machine": "m", "git_sha": "abcdef12", "date": "2026-12-02T00:00",
              "load_average_before": [0.5], "load_average_after": [1.5]}  # fmt: skip
    text = docs_tables.generation_scaling(lambda name: result)
    rows = [
        line for line in text.splitlines() if line.startswith("| 1 ") or line.startswith("| 2 ")
    ]
    assert rows[0].startswith("| 1 | 500 / 510 | 1.00 / 1.02 |")
    assert rows[1].startswith("| 2 | 900 / 950 | 1.80 / 1.90 |")
    assert rows[1].endswith("| 1.50 / 1.50 |")  # cores the job got: 3 CPU-s over 2 s
    assert "order 1, 2, 1, 2" in text and "load 0.5-1.5" in text
    assert "not measured yet" in docs_tables.generation_scaling(lambda name: None)


def test_measured_rates_name_their_files_and_follow_them():
    load = docs_tables._load_from(RESULTS)
    text = docs_tables.measured_rates(load)
    assert all(f"`{name}`" in text for _, name, _ in docs_tables.RATES)
    changed = json.loads((RESULTS / "train_throughput.json").read_text())
    changed["pure_torch_samples_per_s"]["1_threads"] = 12345.0  # another run's rate
    moved = docs_tables.measured_rates(
        lambda name: changed if name == "train_throughput.json" else load(name)
    )
    assert "12345 samples/s on 1 thread" in moved and "12345" not in text
    missing = docs_tables.measured_rates(lambda name: None)
    assert missing.count("not measured yet") == len(docs_tables.RATES)
