"""The README's measured sections are the ones the benchmark JSON builds (never typed)."""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import pytest

import readme_tables

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"


@pytest.mark.skipif(not (RESULTS / "pretrained.json").is_file(), reason="no results yet")
def test_readme_sections_match_the_json():
    assert readme_tables.main(["--check"]) == 0, "run: python benchmarks/readme_tables.py"


@pytest.mark.skipif(not (RESULTS / "pretrained.json").is_file(), reason="no results yet")
def test_a_changed_measurement_makes_the_readme_stale(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    assert readme_tables.main(["--readme", str(readme), "--check"]) == 0
    evaluation = json.loads((RESULTS / "pretrained.json").read_text())
    fits = evaluation["test"]["gamma_fits"]["modulus"]
    fits["mean"] *= 2  # what a different run would have measured
    monkeypatch.setattr(readme_tables, "RESULTS", tmp_path)
    for path in RESULTS.glob("*.json"):  # every other result as it is
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "pretrained.json").write_text(json.dumps(evaluation))
    assert readme_tables.main(["--readme", str(readme), "--check"]) == 1
    assert readme_tables.main(["--readme", str(readme)]) == 0  # rebuilt, it matches again
    assert readme_tables.main(["--readme", str(readme), "--check"]) == 0
    assert f"{fits['mean']:.3f}" in readme.read_text()


# --- the "## Benchmarks" section (benchmarks/readme_benchmarks.py, readme_rows.py) ---

# Integers under these keys pick rows or index other fields (a batch size keys the FFT bound,
# the CNN row picks its width, a pattern size picks the 64 x 64 figures): they stay as they
# are, and the section may show them as is.
KEPT = {
    "base_width",
    "batch",
    "workers",
    "binning",
    "cpu_count",
    "torch_threads",
    "threads",
    "size",
}
NUMBER = re.compile(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?:e[-+]?\d+)?(?=x\b|[^\w]|$)")


def _factor(path: str) -> float:
    return 1.3 + (zlib.crc32(path.encode()) % 50) / 100


def _perturbed(x, path: str = "", key: str = ""):
    """What another run could have written: every number moved by a factor that depends on
    where it sits (integers under KEPT keys excepted), every digit of a string shifted."""
    if isinstance(x, dict):
        return {k: _perturbed(v, f"{path}/{k}", k) for k, v in x.items()}
    if isinstance(x, list):
        return [_perturbed(v, f"{path}/{i}", key) for i, v in enumerate(x)]
    if isinstance(x, bool) or x is None or (isinstance(x, int) and key in KEPT):
        return x
    if isinstance(x, int):
        return max(round(x * _factor(path)), x + 1)
    if isinstance(x, float):
        # small values also move by an offset: 0.08 x 1.3 still prints as 0.1
        return (x or 0.37) * _factor(path) + (0.37 if abs(x) < 0.5 else 0.0)
    return x.translate(str.maketrans("0123456789", "1234567890"))


def _kept(x, key: str = "") -> set[str]:
    """Numbers the perturbation leaves alone: KEPT integers, list lengths, digits in keys."""
    if isinstance(x, dict):
        keys = {d for k in x for d in re.findall(r"\d+", k)}
        return keys.union(*(_kept(v, k) for k, v in x.items()))
    if isinstance(x, list):
        return {str(len(x))}.union(*(_kept(v, key) for v in x))
    if isinstance(x, int) and not isinstance(x, bool) and key in KEPT:
        return {str(x), f"{x:,}"}
    return set()


def _typed_constants() -> set[str]:
    """The targets and reference figures readme_rows.py types (not measurements)."""
    import readme_rows

    values = []
    for name, value in vars(readme_rows).items():
        if name.isupper() and isinstance(value, int | float | tuple):
            values += list(value) if isinstance(value, tuple) else [value]
    return {f"{v:,}" for v in values} | {f"{v:g}" for v in values}


def _items(section: str) -> list[str]:
    """Table rows, and the caption and each bullet unwrapped onto one line."""
    items, fresh = [], True
    for line in section.splitlines():
        if not line.strip():
            fresh = True
            continue
        if fresh or line.startswith(("|", "- ")) or items[-1].startswith("|"):
            items.append(line)
        else:
            items[-1] += " " + line
        fresh = False
    return items


def _numbers(text: str) -> list[str]:
    return [n.rstrip(",") for n in NUMBER.findall(text)]


def _stuck(was: str, now: str, allowed: set[str]) -> set[str]:
    """Numbers of ``was`` that another run's JSON left where they were."""
    a, b = _numbers(was), _numbers(now)
    same = {x for x, y in zip(a, b, strict=True) if x == y} if len(a) == len(b) else set(a) & set(b)
    return same - allowed


def _results() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in RESULTS.glob("*.json")}


def test_the_benchmarks_section_matches_the_json():
    text = (ROOT / "README.md").read_text()
    assert readme_tables.current(text, "benchmarks") == readme_tables.built("benchmarks"), (
        "run: python benchmarks/readme_tables.py"
    )


def test_every_number_in_the_benchmarks_section_comes_from_a_json():
    bench = readme_tables.readme_benchmarks
    results = _results()
    changed = {name: _perturbed(d, name) for name, d in results.items()}
    real = _items(bench.section(results.get))
    other = _items(bench.section(changed.get))
    assert len(real) == len(other) > 20
    anywhere = set().union(*(_kept(d) for d in results.values()))
    typed = _typed_constants()
    for line, moved in zip(real, other, strict=True):
        if line.startswith("|"):
            cells, moved_cells = line.split(" | "), moved.split(" | ")
            files = re.findall(r"`([\w.]+\.json)`", cells[-1])
            allowed = set().union(*(_kept(results[f]) for f in files))
            # the target column (cells[2]) holds requirements: typed, not measured
            pairs = [(cells[i], moved_cells[i]) for i in (0, 1, 3)]
        else:
            allowed, pairs = anywhere | typed, [(line, moved)]
        for was, now in pairs:
            stuck = _stuck(was, now, allowed)
            assert not stuck, f"typed, not from a JSON: {sorted(stuck)} in {was!r}"


def test_a_changed_or_missing_benchmark_json_changes_the_section(tmp_path, monkeypatch):
    for path in RESULTS.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text())
    before = readme_tables.built("benchmarks")
    run = json.loads((tmp_path / "phasing_1thread.json").read_text())
    run["cohere"]["patterns_per_s"] = 4.56  # what a different run would have measured
    (tmp_path / "phasing_1thread.json").write_text(json.dumps(run))
    (tmp_path / "phasing_2threads_loaded.json").unlink()
    monkeypatch.setattr(readme_tables, "RESULTS", tmp_path)
    after = readme_tables.built("benchmarks")
    assert after != before
    assert "cohere-core 4.56" in after
    row = next(line for line in after.splitlines() if "phasing_2threads_loaded.json" in line)
    assert "| not measured |" in row and "beside other CPU-bound work" in row


def test_a_section_whose_json_is_missing_says_not_measured_yet(tmp_path, monkeypatch):
    monkeypatch.setattr(readme_tables, "RESULTS", tmp_path)  # nothing measured
    readme = tmp_path / "README.md"
    sections = readme_tables.SECTIONS
    readme.write_text(
        "".join(f"<!-- {name}:begin -->\nold\n<!-- {name}:end -->\n" for name in sections)
    )
    assert readme_tables.main(["--readme", str(readme)]) == 0
    text = readme.read_text()
    assert readme_tables.current(text, "shipped-model").startswith("(not measured yet")
    assert readme_tables.current(text, "scan54").startswith("(not measured yet")
    table = [line for line in readme_tables.current(text, "benchmarks").splitlines() if "`" in line]
    rows = [line for line in table if line.startswith("| ") and ".json`" in line]
    assert rows and all("| not measured |" in line for line in rows)
    assert readme_tables.main(["--readme", str(readme), "--check"]) == 0
