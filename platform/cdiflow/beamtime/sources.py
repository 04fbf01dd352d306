"""What a source is, and how its scans are read: sources -> scan items -> ``Scan``.

``plan_scans`` decides once what kind each source is (a 34-ID-C beamtime folder, a
folder of scan files, one file or ``file.h5:/dataset``) and records it in the item's
``kind``; ``read_scan_item`` reads an item by that kind. Which files are scans is one
suffix list, ``cdiflow.formats.scan.SCAN_SUFFIXES``, which the file reader
(``formats.generic.open_scan``) dispatches on too.
"""

from __future__ import annotations

import functools
import hashlib
from collections import Counter
from pathlib import Path

from cdiflow.beamtime.results import scan_key
from cdiflow.beamtime.rows import kind_of, reason_of
from cdiflow.formats.aps34idc import (
    discover_beamtime,
    load_calibration,
    read_scan,
    scan_fingerprint,
)
from cdiflow.formats.generic import open_scan, source_fingerprint
from cdiflow.formats.scan import SCAN_SUFFIXES, ScanError

_MAX_NUMBER = 2**63 - 1  # scan numbers go into an int64 column


def plan_scans(sources: list[str | Path], selection: list[int] | None = None) -> list[dict]:
    """List the scans of ``sources`` as items for ``read_and_preprocess``.

    Parameters
    ----------
    sources : 34-ID-C beamtime folders, folders of scan files (HDF5/CXI/NeXus, TIFF,
        NPY/NPZ), or single ``open_scan`` sources (``file.h5:/entry/data``).
    selection : scan numbers to keep (``--scans``); None keeps all. Files in a folder
        of scan files take their number from the digits that end their name; a single
        file given as a source is always kept.

    Returns
    -------
    list of dict items (``scan``, ``key``, ``number``, ``kind``, ``root``, ``source``,
    ``reason``, ``input_fingerprint``: a ``stat``-only fingerprint of the scan's files,
    which a re-run compares with the finished result's). A source that cannot be
    listed becomes one item of kind ``invalid`` that turns into a failed row, and so
    does a file whose name is not valid UTF-8. Keys are unique (ignoring case),
    accepted by ``result_path`` and stable (see ``_assign_keys``); with several sources
    they start with the source's folder name, so two beamtimes never write into each
    other's files. No file name raises.
    """
    items: list[dict] = []
    for source in sources:
        found = _items_of_source(str(source), selection)
        if len(sources) > 1:
            prefix = Path(str(source).split(":", 1)[0].rstrip("/")).name or "source"
            for item in found:
                for field in ("key_name", "file_name"):
                    if item[field]:
                        item[field] = f"{prefix}__{item[field]}"
        items.extend(found)
    _assign_keys(items)
    return items


def _assign_keys(items: list[dict]) -> None:
    """Give every item a unique, stable ``key`` (and drop the planning fields).

    A key is ``scan_key`` of the scan name (a file's stem). Where two items would share
    a key (``scan.h5`` and ``scan.npy``; ``a b.npy`` and a file literally named after
    the key of ``a b``), files use their whole name instead (``scan.h5``, ``scan.npy``).
    What still collides gets ``-2``, ``-3``, ... in plan order, skipping every key that
    any item holds, so a suffix never lands on a real scan's key. Keys are compared
    ignoring case (results may be written to a case-insensitive file system), so an
    item's key depends only on the items it collides with, not on the rest of the folder.
    """
    keys = [_key_of(item["key_name"]) for item in items]
    counts = Counter(key.lower() for key in keys)
    for k, item in enumerate(items):
        if counts[keys[k].lower()] > 1 and item["file_name"]:
            keys[k] = _key_of(item["file_name"])
            item["scan"] = item["file_name_shown"]
    counts = Counter(key.lower() for key in keys)
    taken = set(counts)
    kept: set[str] = set()
    for k, item in enumerate(items):
        key = keys[k]
        if counts[key.lower()] > 1:
            if key.lower() in kept:
                number = 2
                while (candidate := _fit(key, f"-{number}")).lower() in taken:
                    number += 1
                key = candidate
                taken.add(key.lower())
            kept.add(key.lower())
        item["key"] = key
        for field in ("key_name", "file_name", "file_name_shown"):
            del item[field]


def _key_of(name: str) -> str:
    """``scan_key(name)``, shortened where needed so that it is its own key.

    ``scan_key`` cuts a long name and then appends a hash, which can leave the key
    longer than ``scan_key`` accepts back (``result_path`` would refuse it); here the
    hash is kept and the name part is cut instead.
    """
    key = scan_key(name)
    if scan_key(key) == key:
        return key
    tail = "-" + hashlib.sha256(name.encode("utf-8", "surrogatepass")).hexdigest()[:8]
    return _fit(key.removesuffix(tail), tail)


def _fit(base: str, tail: str) -> str:
    """``base + tail`` with ``base`` cut just enough for ``scan_key`` to keep it as is."""
    for cut in range(len(base), 0, -1):
        candidate = base[:cut] + tail
        if scan_key(candidate) == candidate:
            return candidate
    raise AssertionError(f"no safe key for {base!r} + {tail!r}")  # base comes from scan_key


def _item(
    scan,
    number,
    kind,
    root="",
    source="",
    reason="",
    error_kind="",
    file_name="",
    fingerprint="",
) -> dict:
    """One planned scan. ``scan`` (and ``file_name``) are shown; ``key_name`` makes the key.

    A path that is not valid UTF-8 (a file named in Latin-1 on a Linux share) can be
    opened but not written into the result file or the summary table, so such a scan
    becomes an ``invalid`` item (a failed row that says to rename it) with the bad bytes
    shown as U+FFFD; its key still tells it apart from every other name.
    """
    if kind != "invalid" and not all(map(_is_utf8, (scan, root, source, file_name))):
        kind, error_kind = "invalid", "bad_file_name"
        reason = "the file name is not valid UTF-8 (shown with U+FFFD): rename the file"
    return {
        "scan": _shown(scan),
        "key_name": str(scan),
        "file_name": str(file_name),  # a file in a folder of scan files: its whole name
        "file_name_shown": _shown(file_name),
        "number": -1 if number is None else int(number),
        "kind": kind,
        "root": str(root) if _is_utf8(root) else _shown(root),
        "source": str(source) if _is_utf8(source) else _shown(source),
        "reason": reason,
        "error_kind": error_kind,
        "input_fingerprint": fingerprint if kind != "invalid" else "",
    }


def _is_utf8(text) -> bool:
    try:
        str(text).encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes of a path (surrogate escapes)
        return False
    return True


def _shown(text) -> str:
    """``text`` fit for a progress line and the summary: valid UTF-8, one line."""
    text = str(text).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return "".join(ch if ch.isprintable() else ascii(ch)[1:-1] for ch in text)


def _items_of_source(source: str, selection: list[int] | None) -> list[dict]:
    path = Path(source)
    if path.is_dir() and _is_generic_folder(path):
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in SCAN_SUFFIXES)
        if selection is not None:
            wanted = set(selection)
            files = [p for p in files if _trailing_number(p.stem) in wanted]
        return [
            _item(
                p.stem,
                _trailing_number(p.stem),
                "file",
                path,
                p,
                file_name=p.name,
                fingerprint=source_fingerprint(p),
            )
            for p in files
        ]
    if not path.is_dir():
        return [
            _item(
                path.name or source,
                _trailing_number(path.stem),
                "file",
                "",
                source,
                fingerprint=source_fingerprint(source),
            )
        ]
    try:
        beamtime = discover_beamtime(path)
    except ScanError as exc:
        return [_item(path.name, None, "invalid", path, path, reason_of(exc), kind_of(exc))]
    return [
        _item(
            entry.name,
            entry.number,
            "aps34idc",
            beamtime.root,
            entry.folder or path,
            fingerprint=scan_fingerprint(beamtime, entry),
        )
        for entry in beamtime.scans(selection)
    ]


def _is_generic_folder(path: Path) -> bool:
    """A folder of scan files: no spec file, and at least one file of a scan type."""
    if any(path.glob("*.spec")):
        return False
    return any(p.suffix.lower() in SCAN_SUFFIXES for p in path.iterdir() if p.is_file())


def _trailing_number(stem: str) -> int | None:
    """The ASCII digits that end ``stem`` as a scan number (``scan0054`` -> 54), or None.

    Only ``0-9`` count (``str.isdigit`` also accepts ``²`` and other digits that ``int``
    refuses), and a number too large for the summary table's int64 column is no number.
    """
    digits = stem[len(stem.rstrip("0123456789")) :]
    if not digits:
        return None
    significant = digits.lstrip("0")
    if len(significant) > len(str(_MAX_NUMBER)):  # also keeps int() under its digit limit
        return None
    number = int(significant or "0")
    return number if number <= _MAX_NUMBER else None


# --- reading a planned item ----------------------------------------------------------


@functools.lru_cache(maxsize=4)
def _beamtime(root: str, token: str):
    """Discovery of a beamtime, cached per worker process and job (``token``)."""
    return discover_beamtime(root)


@functools.lru_cache(maxsize=4)
def _calibration(root: str, token: str):
    """Dark + whitefield of a beamtime, loaded once per worker process and job."""
    return load_calibration(_beamtime(root, token))


def read_scan_item(item: dict, token: str = "", max_bytes: int | None = None):
    """Read one planned item as a ``cdiflow.formats.scan.Scan`` (raises ``ScanError``).

    A source whose data is above ``max_bytes`` raises ``SourceTooLarge`` unread.
    """
    if item["kind"] == "aps34idc":
        beamtime = _beamtime(item["root"], token)
        entry = next(
            (e for e in beamtime.scans([item["number"]]) if e.number == item["number"]), None
        )
        calibration = _calibration_or_raise(item, token, entry)
        return read_scan(beamtime, entry, calibration=calibration, max_bytes=max_bytes)
    return open_scan(item["source"], max_bytes=max_bytes)


def _calibration_or_raise(item: dict, token: str, entry):
    # A scan without data fails as "no data" before the calibration is blamed.
    if entry is None or entry.folder is None or entry.spec is None or not entry.frame_paths:
        return None  # read_scan raises the precise error before it needs calibration
    return _calibration(item["root"], token)
