"""Generic scan sources and the one entry point ``open_scan``.

Forms accepted by ``open_scan(source)``:

- ``file.h5:/entry/data/data`` (also ``.hdf5``, ``.nxs``, ``.cxi``): one dataset, 2D or
  3D; a bad-pixel mask in the file (CXI ``mask``, NeXus ``pixel_mask``, nonzero = bad)
  becomes the scan's ``bad_pixels`` (``metadata["mask_source"]`` says where it was).
  Without ``:/path``: a CXI file's ``/entry_1/data_1/data``; else the NeXus default
  (``@default`` of the root and entry, then the NXdata ``@signal``); else the one 2D/3D
  numeric dataset of the file.
- ``file.tif`` / ``file.tiff``: one page (2D) or a multi-page stack (3D).
- ``file.npy``; ``file.npz:key`` (or ``file.npz`` holding exactly one array).
- a 34-ID-C scan folder ``.../<detector>/<prefix>_S<NNNN>``: read with the dark,
  whitefield and spec file of the beamtime folder two levels up.

Every failure is a ``ScanError`` subclass with one line naming the file. With
``max_bytes``, a source whose data is larger is refused (``SourceTooLarge``) from the
size its header declares, before any of it is read.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from cdiflow.formats.aps34idc import _SCAN_FOLDER, discover_beamtime, read_scan
from cdiflow.formats.masks import check_mask_shape, mask_in_hdf5, only_dataset
from cdiflow.formats.scan import (  # noqa: F401 - HDF5_SUFFIXES, TIFF_SUFFIXES re-exported
    HDF5_SUFFIXES,
    SCAN_SUFFIXES,
    TIFF_SUFFIXES,
    NotAScan,
    Scan,
    ScanDataError,
    ScanReadError,
    check_frames_array,
    check_source_size,
    declared_nbytes,
    files_fingerprint,
    split_source,
)
from cdiflow.formats.tiff import read_tiff_stack

CXI_DEFAULT = "/entry_1/data_1/data"


def open_scan(source: str | Path, max_bytes: int | None = None) -> Scan:
    """Open any supported scan source as a ``Scan`` (see the module docstring).

    Parameters
    ----------
    source : a file, ``file.h5:/path``, ``file.npz:key`` or a 34-ID-C scan folder.
    max_bytes : refuse a source whose data (as stored: dataset, array, pages or frames)
        is larger, before reading it; None: no limit.

    Raises
    ------
    ScanReadError (or a subclass)
        Missing or unreadable file, unknown form, bad dataset path, bad numbers;
        ``SourceTooLarge`` above ``max_bytes``.
    """
    path, key = split_source(source)
    if path.is_dir():
        return _open_34idc_folder(path, max_bytes)
    if not path.exists():
        raise ScanReadError(path, "file not found", kind="not_found")
    suffix = path.suffix.lower()
    if suffix not in SCAN_SUFFIXES:
        raise NotAScan(path, f"unknown scan file type {suffix!r}")
    file_mask, mask_where = None, ""
    if suffix in HDF5_SUFFIXES:
        data, where, file_mask, mask_where = read_hdf5_dataset(path, key, max_bytes)
    elif suffix in TIFF_SUFFIXES:
        data, where = read_tiff_stack(path, max_bytes=max_bytes), str(path)
    elif suffix == ".npy":
        data, where = _read_npy(path, max_bytes), str(path)
    else:  # .npz, the last of SCAN_SUFFIXES
        data, where = _read_npz(path, key, max_bytes)
    frames = check_frames_array(data, where)
    metadata = {"layout": suffix.lstrip("."), "source": where}
    bad = np.zeros(frames.shape[1:], dtype=bool)
    if file_mask is not None:
        check_mask_shape(file_mask, frames.shape[1:], f"{path}:{mask_where}")
        bad, metadata["mask_source"] = file_mask, mask_where
    return Scan(
        name=path.stem,
        source=where,
        frames=frames.astype(np.float32, copy=False),
        raw=frames if frames.dtype != np.float32 else None,
        bad_pixels=bad,
        metadata=metadata,
    )


def source_fingerprint(source: str | Path) -> str:
    """``files_fingerprint`` of what ``open_scan(source)`` reads (nothing is read here).

    A file source: the file itself (and the dataset or array key). A folder: its files.
    """
    path, key = split_source(source)
    if path.is_dir():
        try:
            files = sorted(p for p in path.iterdir() if p.is_file())
        except OSError:
            files = []
        return files_fingerprint(files, label=str(path))
    return files_fingerprint([path], label=key or "")


def _npy_nbytes(path: Path) -> int:
    """Bytes of the array an NPY file holds, from its header."""
    with open(path, "rb") as f:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(f)
        else:  # 2.0 and 3.0 share the header layout (3.0 allows UTF-8 field names)
            shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    return declared_nbytes(shape, dtype)


def _read_npy(path: Path, max_bytes: int | None = None) -> np.ndarray:
    try:
        check_source_size(_npy_nbytes(path), max_bytes, path)
        return np.load(path, allow_pickle=False)
    except ScanReadError:
        raise
    except Exception as exc:  # ValueError, OSError, EOFError on bad files
        raise ScanReadError(path, f"unreadable NPY ({type(exc).__name__}: {exc})") from None


def _read_npz(path: Path, key: str | None, max_bytes: int | None = None) -> tuple[np.ndarray, str]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.keys())
            if key is None:
                if len(keys) != 1:
                    raise ScanReadError(
                        path, f"holds {keys}; name one as {path.name}:KEY", "bad_key"
                    )
                key = keys[0]
            if key not in keys:
                raise ScanReadError(path, f"no array {key!r} (has {keys})", kind="bad_key")
            # the member's uncompressed size: the array and its small NPY header
            size = archive.zip.getinfo(f"{key}.npy").file_size
            check_source_size(size, max_bytes, f"{path}:{key}")
            return archive[key], f"{path}:{key}"
    except ScanReadError:
        raise
    except Exception as exc:  # zipfile.BadZipFile, ValueError, OSError
        raise ScanReadError(path, f"unreadable NPZ ({type(exc).__name__}: {exc})") from None


def _nexus_default(h5) -> str | None:
    """Follow NeXus ``@default`` (root -> entry -> NXdata) and the NXdata ``@signal``."""

    def attr(node, name):
        value = node.attrs.get(name)
        return value.decode() if isinstance(value, bytes) else value

    node, path = h5, ""
    for _ in range(3):
        default = attr(node, "default")
        if not default or default not in node:
            break
        path += "/" + default
        node = node[default]
    signal = attr(node, "signal") if path else None
    if signal and signal in node:
        return f"{path}/{signal}"
    return None


def read_hdf5_dataset(
    path: Path, key: str | None, max_bytes: int | None = None
) -> tuple[np.ndarray, str, np.ndarray | None, str]:
    """Read one dataset of an HDF5 / NeXus / CXI file (see the module docstring), and
    the file's bad-pixel mask if it holds one (``cdiflow.formats.masks.mask_in_hdf5``:
    CXI ``mask``, NeXus ``pixel_mask``; nonzero = bad).

    A dataset larger than ``max_bytes`` (from its shape and dtype) raises
    ``SourceTooLarge`` without being read.

    Returns
    -------
    (data, "file:/dataset", mask (H, W) bool or None, the mask's path in the file or "").
    """
    try:
        with h5py.File(path, "r") as h5:
            if key is None:
                if path.suffix.lower() == ".cxi" and CXI_DEFAULT in h5:
                    key = CXI_DEFAULT
                else:
                    key = _nexus_default(h5) or only_dataset(h5)
                if key is None:
                    raise ScanReadError(
                        path,
                        f"name the dataset as {path.name}:/path (no single 2D/3D one)",
                        "bad_key",
                    )
            where = f"{path}:{key}"
            if key not in h5:
                raise ScanReadError(where, "no such dataset in the file", kind="bad_key")
            node = h5[key]
            if not isinstance(node, h5py.Dataset):
                raise ScanReadError(where, "is a group, not a dataset", kind="bad_key")
            check_source_size(declared_nbytes(node.shape, node.dtype), max_bytes, where)
            mask, mask_where = mask_in_hdf5(h5)
            return node[()], where, mask, mask_where
    except ScanReadError:
        raise
    except Exception as exc:  # OSError for non-HDF5 / truncated files, KeyError, ...
        raise ScanReadError(path, f"unreadable HDF5 ({type(exc).__name__}: {exc})") from None


def _open_34idc_folder(folder: Path, max_bytes: int | None = None) -> Scan:
    """A ``<prefix>_S<NNNN>`` folder of a 34-ID-C beamtime, with its beamtime's files."""
    m = _SCAN_FOLDER.match(folder.name)
    if not m:
        raise NotAScan(folder, "a folder that is not a 34-ID-C <prefix>_S<NNNN> scan folder")
    beamtime = discover_beamtime(folder.resolve().parents[1])
    number = int(m.group("number"))
    entries = [e for e in beamtime.entries if e.number == number]
    if not entries or entries[0].folder is None:
        raise ScanDataError(folder, "not found by beamtime discovery", kind="not_a_scan")
    return read_scan(beamtime, entries[0], max_bytes=max_bytes)
