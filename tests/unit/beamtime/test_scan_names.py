"""No file name stops a beamtime job, and every scan gets its own stable result key.

Regressions: ``scan².npy`` aborted planning (``'²'.isdigit()`` but ``int('²')`` fails);
``scan.h5``, ``scan.npy`` and ``scan-2.tif`` got the key ``scan-2`` twice (one result file,
and resume marked both done); a name longer than 80 characters got a key that
``result_path`` refuses, and a name that is not valid UTF-8 broke the summary table.
"""

from __future__ import annotations

import os

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile

from cdiflow.beamtime.results import SCANS_DIR, result_path, scan_key
from cdiflow.beamtime.steps import plan_scans
from cdiflow.pipelines.reconstruct import reconstruct_beamtime

LONG = "x" * 240  # with ".npy" near the 255-byte limit of a file name


def _stack() -> np.ndarray:
    return np.random.default_rng(0).poisson(5.0, (64, 64)).astype(np.float32)


def _write(folder, name: str | bytes) -> None:
    """A small readable scan file named ``name`` (bytes: a name that is not UTF-8)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = os.path.join(os.fsencode(folder), os.fsencode(name))
    suffix = os.fsdecode(path).rsplit(".", 1)[-1]
    if suffix == "tif":
        tifffile.imwrite(os.fsdecode(path), _stack())
    elif suffix == "h5":
        with h5py.File(path, "w") as f:
            f["entry/data/data"] = _stack()
    else:
        with open(path, "wb") as f:
            np.save(f, _stack())


def _keys(items) -> list[str]:
    return [i["key"] for i in items]


def _assert_keys_usable(items, out) -> None:
    keys = _keys(items)
    assert len({k.lower() for k in keys}) == len(keys), keys  # unique, even ignoring case
    for key in keys:
        assert scan_key(key) == key
        result_path(out, SCANS_DIR, key, ".h5")  # accepted: does not raise


def test_only_ascii_digits_make_a_scan_number(tmp_path):
    folder = tmp_path / "files"
    for name in ("scan².npy", "scan٣.npy", "scan²12.npy", "scan0054.npy", "scan.npy"):
        _write(folder, name)
    items = plan_scans([folder])
    numbers = {i["scan"]: i["number"] for i in items}
    assert numbers == {"scan²": -1, "scan٣": -1, "scan²12": 12, "scan0054": 54, "scan": -1}
    _assert_keys_usable(items, tmp_path / "out")
    assert [i["scan"] for i in plan_scans([folder], [54, 12])] == ["scan0054", "scan²12"]


def test_a_number_too_large_for_the_table_is_no_number(tmp_path):
    folder = tmp_path / "files"
    _write(folder, "scan" + "9" * 30 + ".npy")
    _write(folder, "run" + "0" * 40 + "7.npy")
    numbers = sorted(i["number"] for i in plan_scans([folder]))
    assert numbers == [-1, 7]


def test_files_sharing_a_stem_get_their_whole_name_as_key(tmp_path):
    folder = tmp_path / "files"
    for name in ("scan.h5", "scan.npy", "scan-2.tif", "other.npy"):
        _write(folder, name)
    items = plan_scans([folder])
    by_source = {os.path.basename(i["source"]): i["key"] for i in items}
    assert by_source == {
        "scan.h5": "scan.h5",
        "scan.npy": "scan.npy",
        "scan-2.tif": "scan-2",
        "other.npy": "other",
    }
    shown = {i["scan"] for i in items}
    assert {"scan.h5", "scan.npy", "scan-2", "other"} == shown  # progress tells them apart
    _assert_keys_usable(items, tmp_path / "out")


def test_keys_are_stable_when_unrelated_files_are_added(tmp_path):
    folder = tmp_path / "files"
    for name in ("scan.h5", "scan.npy", "scan-2.tif", "a b.npy"):
        _write(folder, name)
    before = {i["source"]: i["key"] for i in plan_scans([folder])}
    assert before == {i["source"]: i["key"] for i in plan_scans([folder])}  # same folder
    for name in ("scan-3.npy", "scan.npy-2.npy", "aaa.npy", "zzz.tif", "scan-2.npy"):
        _write(folder, name)
    after = {i["source"]: i["key"] for i in plan_scans([folder])}
    # only scan-2.tif collides with a new file (scan-2.npy); every other key is kept
    changed = {os.path.basename(s) for s, k in before.items() if after[s] != k}
    assert changed == {"scan-2.tif"}
    _assert_keys_usable(plan_scans([folder]), tmp_path / "out")


def test_a_dedupe_suffix_never_takes_a_real_scans_key(tmp_path):
    # Two beamtime folders of the same name: both files are "bt__scan.npy"; the second
    # must not get "bt__scan.npy-2", which is the key of the real scan "scan.npy-2".
    first, second = tmp_path / "a" / "bt", tmp_path / "b" / "bt"
    _write(first, "scan.npy")
    _write(first, "scan.npy-2.npy")
    _write(second, "scan.npy")
    items = plan_scans([first, second])
    assert _keys(items) == ["bt__scan.npy", "bt__scan.npy-2", "bt__scan.npy-3"]
    _assert_keys_usable(items, tmp_path / "out")


def test_names_that_sanitise_alike_get_different_keys(tmp_path):
    folder = tmp_path / "files"
    hashed = scan_key("a b")  # "a_b-<hash>": a file may be named exactly that
    names = ["a b.npy", "a?b.npy", "a_b.npy", f"{hashed}.npy", "Scan.npy", "scan.npy"]
    names += [f"{LONG}.npy", f"{LONG}y.npy", f"{LONG[:-1]}.npy"]  # cut to the same 71 x
    for name in names:
        _write(folder, name)
    items = plan_scans([folder])
    assert len(items) == len(names)
    _assert_keys_usable(items, tmp_path / "out")
    assert all(len(k) <= 80 for k in _keys(items))


@pytest.mark.parametrize("extra", [[], [b"scan\xff.tif"]], ids=["alone", "with-a-twin"])
def test_a_name_that_is_not_utf8_fails_its_scan_only(tmp_path, extra):
    folder = tmp_path / "files"
    _write(folder, b"latin\xe9.npy")
    _write(folder, b"scan\xff.npy")
    for name in extra:
        _write(folder, name)
    items = plan_scans([folder])
    bad = [i for i in items if i["kind"] == "invalid"]
    assert len(bad) == len(items) == 2 + len(extra)
    assert {i["error_kind"] for i in bad} == {"bad_file_name"}
    for item in bad:
        for field in ("scan", "source", "root", "reason"):
            item[field].encode("utf-8")  # fit for the summary table
    _assert_keys_usable(items, tmp_path / "out")


ODD_NAMES = [
    "scan².npy",
    "scan٣.npy",
    "scan 1.npy",
    "a b.npy",
    f"{scan_key('a b')}.npy",
    "..npy",
    ".hidden.npy",
    "-rf.npy",
    "tab\tand\nnewline.npy",
    f"{LONG}.npy",
    f"{LONG}y.npy",
    "scan" + "9" * 30 + ".npy",
    "scan.h5",
    "scan.npy",
    "scan-2.tif",
    "Scan.npy",
]


def test_odd_names_do_not_stop_the_job_and_resume_per_scan(tmp_path, weights_file, fast_config):
    folder = tmp_path / "files"
    for name in ODD_NAMES:
        _write(folder, name)
    _write(folder, b"latin\xe9.npy")
    out = tmp_path / "out"

    def run():
        return reconstruct_beamtime(
            [folder],
            out,
            model=str(weights_file),
            config=fast_config,
            runner="local",
            progress=lambda line: None,
        )

    first = run()
    assert len(first.rows) == len(ODD_NAMES) + 1
    failed = [r for r in first.rows if r["status"] != "ok"]
    assert [r["error_kind"] for r in failed] == ["bad_file_name"], failed
    keys = [r["key"] for r in first.rows]
    assert len(set(keys)) == len(keys)
    written = sorted(p.name for p in (out / SCANS_DIR).iterdir())
    expected = [f"{r['key']}{suffix}" for r in first.ok for suffix in (".h5", ".cxi")]
    assert written == sorted(expected)  # one .h5 and one .cxi per scan
    table = pq.read_table(out / "summary.parquet").to_pylist()
    assert [r["key"] for r in table] == keys
    assert all("\n" not in r["scan"] for r in table)

    again = run()  # every finished scan is kept, only the failed one is tried again
    assert again.skipped == len(ODD_NAMES) and again.processed == 1
    assert [r["key"] for r in again.rows] == keys
