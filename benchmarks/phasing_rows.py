"""The phasing benchmark's mode files, and the one rule every reader picks rows by.

``phasing.py`` writes one JSON per mode; ``readme_rows``, ``docs_tables`` and the
benchmark's own summary and targets read them. Import cost: none (no torch).
"""

from __future__ import annotations

# (file, what the mode is), in the order ``phasing.py --modes`` runs them
MODES = (
    ("phasing_1thread.json", "1 torch thread"),
    ("phasing.json", "2 torch threads"),
    ("phasing_2threads_loaded.json", "2 torch threads beside other CPU-bound work"),
)


def fastest(ours: list[dict], batch: int | None = None) -> dict:
    """The fastest of ``ours`` rows, of one ``batch`` size if given (1: one scan, the best
    of its thread settings)."""
    rows = [r for r in ours if batch is None or r["batch"] == batch]
    return max(rows, key=lambda r: r["patterns_per_s"])
