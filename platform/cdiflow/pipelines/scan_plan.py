"""Planning a beamtime reconstruction: sources -> scan items with safe, unique keys."""

from __future__ import annotations

from pathlib import Path

from cdiflow.formats.results import scan_key
from cdiflow.pipelines.scan_rows import kind_of, reason_of

GENERIC_SUFFIXES = (".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".cxi", ".tif", ".tiff", ".npy", ".npz")


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
    ``reason``). A source that cannot be listed becomes one item of kind ``invalid``
    that turns into a failed row. Keys are unique; with several sources they start with
    the source's folder name, so two beamtimes never write into each other's files.
    """
    items: list[dict] = []
    for source in sources:
        found = _items_of_source(str(source), selection)
        if len(sources) > 1:
            prefix = Path(str(source).split(":", 1)[0].rstrip("/")).name or "source"
            for item in found:
                item["key_name"] = f"{prefix}__{item['key_name']}"
        items.extend(found)
    seen: dict[str, int] = {}
    for item in items:
        key = scan_key(item.pop("key_name"))
        if key in seen:
            seen[key] += 1
            key = f"{key}-{seen[key]}"
        else:
            seen[key] = 1
        item["key"] = key
    return items


def _item(scan, number, kind, root="", source="", reason="", error_kind="") -> dict:
    return {
        "scan": str(scan),
        "key_name": str(scan),
        "number": -1 if number is None else int(number),
        "kind": kind,
        "root": str(root),
        "source": str(source),
        "reason": reason,
        "error_kind": error_kind,
    }


def _items_of_source(source: str, selection: list[int] | None) -> list[dict]:
    from cdiflow.formats.aps34idc import discover_beamtime
    from cdiflow.formats.scan import ScanError

    path = Path(source)
    if path.is_dir() and _is_generic_folder(path):
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in GENERIC_SUFFIXES)
        items = [_item(p.stem, _trailing_number(p.stem), "file", path, p) for p in files]
        if selection is not None:
            items = [i for i in items if i["number"] in set(selection)]
        return items
    if not path.is_dir():
        return [_item(path.name or source, _trailing_number(path.stem), "file", "", source)]
    try:
        beamtime = discover_beamtime(path)
    except ScanError as exc:
        return [_item(path.name, None, "invalid", path, path, reason_of(exc), kind_of(exc))]
    return [
        _item(entry.name, entry.number, "aps34idc", beamtime.root, entry.folder or path)
        for entry in beamtime.scans(selection)
    ]


def _is_generic_folder(path: Path) -> bool:
    """A folder of scan files: no spec file, and at least one file of a scan type."""
    if any(path.glob("*.spec")):
        return False
    return any(p.suffix.lower() in GENERIC_SUFFIXES for p in path.iterdir() if p.is_file())


def _trailing_number(stem: str) -> int | None:
    digits = ""
    for ch in reversed(stem):
        if not ch.isdigit():
            break
        digits = ch + digits
    return int(digits) if digits else None
