"""The in-memory form of one measured scan, and the typed errors of the scan readers.

Every reader in ``cdiflow.formats`` returns a ``Scan``; every failure it meets (a file
that is missing, truncated, of the wrong shape, holding NaN, ...) is raised as a
``ScanError`` subclass whose message is one line naming the file. A beamtime job
catches ``ScanError`` per scan, records ``kind`` and ``reason`` in its table and goes
on with the next scan; readers never let a raw library exception reach the caller.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from pathlib import Path
from typing import Any

import numpy as np

from cdiflow.errors import ScanError

MIB = 2**20  # bytes in a MiB: the unit of the source size limit (``--max-source-mib``)
HDF5_SUFFIXES = {".h5", ".hdf5", ".hdf", ".nxs", ".nx5", ".cxi"}
TIFF_SUFFIXES = {".tif", ".tiff"}
NUMPY_SUFFIXES = {".npy", ".npz"}
# Every file suffix that is a scan (``formats.generic.open_scan``; folders of scan files).
SCAN_SUFFIXES = frozenset(HDF5_SUFFIXES | TIFF_SUFFIXES | NUMPY_SUFFIXES)


class ScanReadError(ScanError):
    """A scan's file cannot be read or is not what it claims to be.

    Attributes
    ----------
    path : str
        The file or folder at fault.
    reason : str
        One line, without the path.
    kind : str
        A short stable code for tables and tests (``"unreadable"``, ``"missing_frames"``, ...).
    """

    kind = "unreadable"

    def __init__(self, path: str | Path, reason: str, kind: str | None = None):
        reason = " ".join(reason.splitlines())  # one line, whatever a library said
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
        if kind is not None:
            self.kind = kind

    def __reduce__(self):
        # Ray and multiprocessing pickle exceptions; the default rebuilds them from
        # ``args`` (the message alone), which this signature cannot take.
        return (type(self), (self.path, self.reason, self.kind))


class CalibrationMissing(ScanReadError):
    """The dark or whitefield file of a beamtime is missing or unreadable."""

    kind = "missing_calibration"


class ScanNotFound(ScanReadError):
    """A scan has a spec entry but no data (or a data folder but no spec entry)."""

    kind = "no_data"


class NotAScan(ScanReadError):
    """A folder or file is not a scan of the layout it was taken for."""

    kind = "not_a_scan"


class SourceTooLarge(ScanReadError):
    """A scan source holds more data than the limit allows (found before reading it)."""

    kind = "too_large"


class ScanDataError(ScanReadError):
    """The numbers of a scan are unusable: NaN, negative, all zero, wrong shape, ..."""

    kind = "bad_data"


class SaturatedPeak(ScanDataError):
    """The Bragg peak itself is saturated, so its modulus is unknown."""

    kind = "saturated_peak"


@dataclasses.dataclass(frozen=True, eq=False)
class Scan:
    """One scan: a stack of corrected detector frames and where it came from.

    Attributes
    ----------
    name : str
        Scan name as the beamline writes it (``Staff20-1a_S0054``) or the file stem.
    source : str
        What was opened (a folder, ``file.h5:/entry/data``, ``file.npz:key``).
    frames : (F, H, W) float32 ndarray
        Counts after dark subtraction (small negatives clipped to 0) and flat-field
        correction; a single 2D pattern has F == 1.
    raw : (F, H, W) ndarray or None
        The raw counts in their stored dtype, kept for the saturation test; None when
        the source has no separate raw counts (then ``frames`` are the raw counts).
    bad_pixels : (H, W) bool ndarray
        Pixels the detector calibration marks unusable (zero or tiny whitefield).
    metadata : dict
        Provenance: spec command, motor, ROI offset, dark/whitefield files, ...
    """

    name: str
    source: str
    frames: np.ndarray
    raw: np.ndarray | None = None
    bad_pixels: np.ndarray | None = None
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def counts(self) -> np.ndarray:
        """The counts used for the saturation test: raw when kept, else ``frames``."""
        return self.frames if self.raw is None else self.raw

    @property
    def nbytes_raw(self) -> int:
        """Bytes of raw frame data read from storage (for read-rate figures)."""
        return int(self.counts.nbytes)


def check_frames_array(data: Any, path: str | Path) -> np.ndarray:
    """Check a loaded array is a 2D pattern or a 3D stack of finite, non-negative counts.

    Parameters
    ----------
    data : array-like
        What a file held.
    path : str or Path
        Named in the error.

    Returns
    -------
    (F, H, W) ndarray in the stored dtype (2D input gains F == 1).

    Raises
    ------
    ScanDataError
        Wrong number of dims, empty, non-numeric, complex, NaN/inf or negative counts.
    """
    arr = np.asarray(data)
    if arr.dtype.kind not in "uif":
        raise ScanDataError(path, f"not numeric counts (dtype {arr.dtype})", kind="wrong_shape")
    if arr.ndim == 2:
        arr = arr[None]
    if arr.ndim != 3 or min(arr.shape) < 1:
        raise ScanDataError(
            path, f"expected a 2D pattern or 3D stack, got shape {arr.shape}", kind="wrong_shape"
        )
    if arr.shape[-1] < 8 or arr.shape[-2] < 8:
        raise ScanDataError(path, f"frames of shape {arr.shape[1:]} are too small", "wrong_shape")
    if arr.dtype.kind == "f":
        bad = ~np.isfinite(arr)
        if bad.any():
            f = int(np.argwhere(bad)[0][0])
            raise ScanDataError(
                path, f"{int(bad.sum())} NaN/inf counts (first in frame {f})", kind="nan_counts"
            )
    if arr.dtype.kind in "if" and arr.size and arr.min() < 0:
        f = int(np.argwhere(arr < 0)[0][0])
        raise ScanDataError(
            path,
            f"{int((arr < 0).sum())} negative raw counts (first in frame {f}, min {arr.min()})",
            kind="negative_counts",
        )
    return arr


def check_no_empty_frames(frames: np.ndarray, path: str | Path) -> None:
    """Raise ``ScanDataError`` (kind ``all_zero``) when any frame holds only zeros."""
    flat = frames.reshape(frames.shape[0], -1)
    # max and min are vectorised reductions, several times faster than any() on ints
    empty = (flat.max(axis=1) == 0) & (flat.min(axis=1) == 0)
    if empty.any():
        which = np.flatnonzero(empty)
        shown = ", ".join(str(i) for i in which[:5]) + (" ..." if len(which) > 5 else "")
        raise ScanDataError(path, f"{len(which)} all-zero frame(s): {shown}", kind="all_zero")


def files_fingerprint(paths, label: str = "") -> str:
    """A cheap fingerprint of input files: 16 hex digits of sha256 over each file's
    absolute path, size and mtime (ns), in the order given, and ``label``.

    Nothing is read, only ``stat``-ed, so a beamtime of thousands of frames is
    fingerprinted in moments; rewriting or touching a file, adding or removing one, or
    moving the input elsewhere changes it. A file that cannot be ``stat``-ed counts as
    missing (its scan fails on reading anyway).
    """
    digest = hashlib.sha256(f"cdiflow input\0{label}".encode("utf-8", "surrogateescape"))
    for path in paths:
        try:
            info = os.stat(path)
            stamp = f"{info.st_size} {info.st_mtime_ns}"
        except OSError:
            stamp = "missing"
        name = os.path.abspath(path)
        digest.update(f"\n{name}\0{stamp}".encode("utf-8", "surrogateescape"))
    return digest.hexdigest()[:16]


def check_source_size(nbytes: int, max_bytes: int | None, path: str | Path) -> None:
    """Raise ``SourceTooLarge`` when a source's data (``nbytes``) is above ``max_bytes``.

    Readers call this with the size that the file's header declares (HDF5 dataset
    shape and dtype, NPY header, TIFF pages), before reading any of the data: a worker
    would hold that many bytes and a float32 copy on top. ``max_bytes`` None: no limit.
    """
    if max_bytes is not None and nbytes > max_bytes:
        raise SourceTooLarge(
            path,
            f"source is {_mib(nbytes)} MiB, above the limit of {_mib(max_bytes)} MiB "
            "(--max-source-mib)",
            kind="too_large",
        )


def declared_nbytes(shape, dtype) -> int:
    """Bytes of an array of ``shape`` and ``dtype``, as a file header declares them.

    ``shape`` None (an HDF5 dataset with a null dataspace) holds nothing.
    """
    if shape is None:
        return 0
    return int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize


def _mib(nbytes: int) -> str:
    value = nbytes / MIB
    if value >= 10:
        return f"{value:.1f}".removesuffix(".0")
    return f"{value:.3g}"


def split_source(source: str | Path) -> tuple[Path, str | None]:
    """``"a/b.h5:/entry/x"`` -> ``(Path("a/b.h5"), "/entry/x")``; no key -> None."""
    text = str(source)
    m = re.match(r"^(.*\.(?:h5|hdf5|hdf|nxs|nx5|cxi|npz)):(.+)$", text, flags=re.IGNORECASE)
    if m:
        return Path(m.group(1)), m.group(2)
    return Path(text), None
