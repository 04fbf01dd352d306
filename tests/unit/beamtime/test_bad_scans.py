"""Bad input never stops the job: each of the bad-input kinds becomes a failed row with a
reason, and every good scan next to them completes (the per-scan steps, no Ray)."""

from __future__ import annotations

from pathlib import Path

from cdiflow.beamtime.results import SCANS_DIR
from cdiflow.beamtime.steps import plan_scans, run_items_locally


def _run(sources, model, config, out, selection=None):
    items = plan_scans([str(s) for s in sources], selection)
    rows = run_items_locally(items, model, config, out, {"git_sha": "test"})
    return items, rows


def test_every_bad_kind_fails_alone_and_good_scans_complete(
    corrupt, tiny_model, fast_config, tmp_path
):
    beamtime, cases = corrupt
    sources = sorted({c.source for c in cases} | {str(beamtime)})
    # A spec entry without data is listed only when asked for (a beamtime's log also
    # lists hundreds of alignment scans that saved no frames), so select every number.
    selection = sorted({c.scan for c in cases if c.scan is not None} | {1, 2})
    items, rows = _run(sources, tiny_model, fast_config, tmp_path, selection)
    assert len(rows) == len(items)
    assert [r["key"] for r in rows] == [i["key"] for i in items]

    kinds_seen = set()
    for case in cases:
        if case.scan is None:  # an open_scan source (HDF5 path)
            matches = [r for i, r in zip(items, rows, strict=True) if i["source"] == case.source]
        else:
            matches = [
                r
                for i, r in zip(items, rows, strict=True)
                if i["root"] == str(Path(case.source)) and i["number"] == case.scan
            ]
        assert len(matches) == 1, case
        row = matches[0]
        assert row["status"] == "failed", (case, row)
        assert row["error_kind"] == case.error_kind, (case, row)
        assert row["reason"] and "\n" not in row["reason"]
        assert row["stage"] in ("read", "preprocess")
        kinds_seen.add(case.kind)
    assert len(kinds_seen) >= 10, sorted(kinds_seen)

    good = [r for r in rows if r["status"] == "ok"]
    assert {r["number"] for r in good} == {1, 2}  # the good scans of the corrupted beamtime
    assert len(good) == 2  # (their copies in the variants without dark/whitefield fail)
    for row in good:
        assert (tmp_path / row["result"]).is_file()
        assert (tmp_path / row["preview"]).is_file()
        assert 0 < row["refined_chi2"] < 1
    written = sorted(p.name for p in (tmp_path / SCANS_DIR).iterdir())
    assert len(written) == 4  # a .h5 and a .cxi per good scan; failed scans write nothing


def test_unlisted_source_is_one_failed_row(tmp_path, tiny_model, fast_config):
    missing = tmp_path / "no-such-beamtime"
    empty = tmp_path / "empty"
    empty.mkdir()
    items, rows = _run([missing, empty], tiny_model, fast_config, tmp_path / "out")
    assert [r["status"] for r in rows] == ["failed", "failed"]
    assert rows[0]["error_kind"] == "not_found"
    assert rows[1]["error_kind"] == "not_a_scan"
