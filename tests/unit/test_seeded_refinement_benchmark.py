"""benchmarks/seeded_refinement.py runs end to end (--smoke) and its numbers agree."""

from __future__ import annotations

import json

import seeded_refinement


def test_smoke_run_writes_consistent_results(tmp_path):
    out = tmp_path / "s.json"
    seeded_refinement.main(["--smoke", "--out", str(out)])
    result = json.loads(out.read_text())
    summary = result["summary"]
    assert summary["patterns"] == 6 and summary["repeats"] == 2
    for kind in ("random-rectangle", "random-cnn-support"):
        assert 0.0 <= summary["fraction_cnn_below_random_median_chi2"][kind] <= 1.0
        variant = result["cnn_variants"]["gentle+adam"][kind]
        assert 0.0 <= variant["fraction_below_random_median_chi2"] <= 1.0
    # guessed and blind starts ran their own settings
    assert (
        result["settings"]["cnn"]["schedule"] != result["settings"]["random-rectangle"]["schedule"]
    )
    reach = summary["iterations_to_random_median"]["random-rectangle"]["median"]
    if reach:
        expected = result["timing"]["random_600_iterations"] / reach
        assert abs(result["speedup_at_equal_chi2"] - expected) < 1e-9
    assert result["timing"]["cnn_seeded_seconds_per_pattern"] > 0
    both = result["cnn_variants"]["candidates"]
    assert (both["candidates"], both["iterations_of_work"]) == (2, 2 * 6 + 3)
    assert result["git_sha"] is None or len(result["git_sha"]) == 40
    diagnosis = result["cnn_start_diagnosis"]
    for kind in ("random-rectangle", "random-cnn-support"):
        # the patterns it loses are those the summary does not count as below the median
        below = summary["fraction_cnn_below_random_median_image_error"][kind]["amplitude_error"]
        lost = diagnosis[kind]["patterns_refined_loses_amplitude_error"]
        assert lost == round((1 - below) * summary["patterns"])
        raw = diagnosis[kind]["fraction_unrefined_below_random_median"]
        assert all(0.0 <= v <= 1.0 for v in raw.values())


def test_work_counts_every_candidates_head_until_the_winner_reaches_the_median():
    settings = seeded_refinement.SEEDED_SETTINGS  # 5 candidates x 99, then 60 ER
    assert seeded_refinement.work_to(40, settings) == 5 * 40
    assert seeded_refinement.work_to(120, settings) == 5 * 99 + 21
    assert seeded_refinement.work_to(None, settings) is None
    alone = seeded_refinement.GENTLE_SETTINGS
    assert seeded_refinement.work_to(40, alone) == 40
