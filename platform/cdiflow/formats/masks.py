"""Detector masks: read from the scan file or a ``--mask`` file, or found in the counts.

A mask here is True where a pixel is *unusable* (the files' convention: CXI ``mask``
and NeXus ``pixel_mask`` store nonzero for a bad pixel, and so does PyNX); the
preprocessing turns the union of all of them into its *measured* mask (True = measured).

Sources, in the order the preprocessing applies them:

- the scan file's own mask (``mask_in_hdf5``): CXI ``/entry_1/instrument_1/detector_1/mask``
  or ``/entry_1/data_1/mask``, NeXus ``.../pixel_mask`` of the entry's detector;
- ``--mask FILE`` (``read_mask_file``): NPY, TIFF, or HDF5 (``file.h5:/path``, or the
  file's mask dataset); any nonzero value is a bad pixel;
- unmeasured regions found in the counts: the connected zero-count region at the
  pattern's centre (a beamstop, ``beamstop_mask``) and detector gaps, rows or columns
  that hold no count (``gap_mask``).
"""

from __future__ import annotations

import functools
from pathlib import Path

import h5py
import numpy as np
import tifffile

from cdiflow.formats.scan import (
    HDF5_SUFFIXES,
    TIFF_SUFFIXES,
    ScanDataError,
    ScanReadError,
    split_source,
)

CXI_MASKS = ("/entry_1/instrument_1/detector_1/mask", "/entry_1/data_1/mask")
NEXUS_MASK_NAMES = ("pixel_mask",)


class MaskError(ScanReadError):
    """A mask file cannot be read, or does not fit the frames it is applied to."""

    kind = "bad_mask"


def mask_in_hdf5(h5) -> tuple[np.ndarray | None, str]:
    """The bad-pixel mask an open HDF5 file holds (nonzero = bad), and where it was.

    CXI paths first (``CXI_MASKS``), then the first NeXus ``pixel_mask`` found under
    an ``NXdetector`` group (or anywhere, if no group says its class). 3D masks (one per
    frame) are reduced to the union over frames. Returns (None, "") when there is none.
    """
    for path in CXI_MASKS:
        node = h5.get(path)
        if isinstance(node, h5py.Dataset) and node.ndim in (2, 3):
            return _as_bad(node[()]), path
    found: list[str] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and name.rsplit("/", 1)[-1] in NEXUS_MASK_NAMES:
            found.append("/" + name)

    h5.visititems(visit)
    for path in found:
        node = h5[path]
        if node.ndim in (2, 3):
            return _as_bad(node[()]), path
    return None, ""


def _as_bad(values: np.ndarray) -> np.ndarray:
    bad = np.asarray(values) != 0
    return bad.any(axis=0) if bad.ndim == 3 else bad


@functools.lru_cache(maxsize=4)
def read_mask_file(source: str) -> np.ndarray:
    """Read a ``--mask`` file as (H, W) bool, True = bad pixel (any nonzero value).

    ``source`` is ``mask.npy``, ``mask.tif``, ``mask.h5`` (its CXI / NeXus mask, else
    its one 2D dataset) or ``mask.h5:/path``. Cached per process: every scan of a job
    reads the same file.

    Raises
    ------
    MaskError : missing or unreadable file, no 2D mask in it.
    """
    path, key = split_source(source)
    if not path.is_file():
        raise MaskError(path, "--mask file not found", kind="bad_mask")
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            values = np.load(path, allow_pickle=False)
        elif suffix in TIFF_SUFFIXES:
            values = tifffile.imread(path)
        elif suffix in HDF5_SUFFIXES:
            values = _hdf5_mask(path, key)
        else:
            raise MaskError(path, f"--mask must be NPY, TIFF or HDF5, not {suffix!r}", "bad_mask")
    except ScanReadError:
        raise
    except Exception as exc:  # noqa: BLE001 - any library error becomes one line
        raise MaskError(path, f"unreadable --mask ({type(exc).__name__}: {exc})") from None
    values = np.asarray(values)
    if values.ndim == 3 and values.shape[0] == 1:
        values = values[0]
    if values.ndim != 2 or values.dtype.kind not in "biuf":
        raise MaskError(path, f"--mask must be a 2D numeric array, got {values.shape}", "bad_mask")
    return values != 0


def _hdf5_mask(path: Path, key: str | None) -> np.ndarray:
    with h5py.File(path, "r") as h5:
        if key is None:
            values, where = mask_in_hdf5(h5)
            if values is not None:
                return values
            key = only_dataset(h5)
            if key is None:
                raise MaskError(path, "no mask dataset; name one as FILE:/path", "bad_mask")
        if key not in h5 or not isinstance(h5[key], h5py.Dataset):
            raise MaskError(f"{path}:{key}", "no such dataset in the --mask file", "bad_mask")
        return h5[key][()]


def only_dataset(h5) -> str | None:
    """The path of the single 2D/3D numeric dataset in the file, if exactly one (datasets
    named ``mask`` or ``pixel_mask`` are masks, not data)."""
    found: list[str] = []

    def visit(name, obj):
        if isinstance(obj, h5py.Dataset) and obj.ndim in (2, 3) and obj.dtype.kind in "uif":
            if name.rsplit("/", 1)[-1] not in ("mask", "pixel_mask"):  # masks are not data
                found.append("/" + name)

    h5.visititems(visit)
    return found[0] if len(found) == 1 else None


def check_mask_shape(mask: np.ndarray, frame_shape: tuple[int, ...], source: str) -> None:
    """Raise ``MaskError`` when a (H, W) mask does not match the frames' (H, W)."""
    if tuple(mask.shape) != tuple(frame_shape):
        raise MaskError(
            source,
            f"--mask of shape {tuple(mask.shape)} does not match frames of shape "
            f"{tuple(frame_shape)}",
            kind="bad_mask",
        )


def saturation_mask(raw_frame: np.ndarray, config) -> tuple[np.ndarray, float]:
    """(H, W) bool of saturated pixels in a raw frame, and the level used (inf: none)."""
    level = config.saturation_level
    if level is None:
        top = float(raw_frame.max())
        full_counter = top >= 255 and float(np.log2(top + 1)).is_integer()
        plateau = int((raw_frame == top).sum()) >= config.saturation_plateau and top > 0
        level = top if (full_counter or plateau) else float("inf")
    return raw_frame >= level, float(level)


def hot_pixel_mask(frame: np.ndarray, config) -> np.ndarray:
    """(H, W) bool: isolated pixels far above all 8 neighbours (not physical speckle)."""
    from scipy.ndimage import maximum_filter

    footprint = np.ones((3, 3), bool)
    footprint[1, 1] = False
    neighbours = maximum_filter(frame, footprint=footprint, mode="constant", cval=0.0)
    return (frame > config.hot_min_counts) & (frame > config.hot_ratio * neighbours)


def dead_pixel_mask(frames: np.ndarray, config) -> np.ndarray:
    """(H, W) bool: zero in every frame while its 3x3 neighbourhood collects real counts.

    The median (not the maximum) keeps the edge of a signal region from counting as
    dead. A 3x3 median is >= t exactly when at least 5 of the 9 values are >= t, which a
    box filter of the thresholded sums counts far faster than a median filter.
    """
    from scipy.ndimage import uniform_filter

    total = frames.sum(axis=0)
    bright = (total >= config.dead_neighbour_counts).astype(np.float32)
    return (total == 0) & (uniform_filter(bright, size=3, mode="nearest") * 9 > 4.5)


def beamstop_mask(
    total: np.ndarray, centre: tuple[float, float], search: int = 3, min_pixels: int = 4
) -> np.ndarray:
    """(H, W) bool: the connected zero-count region at (or next to) the centre.

    ``total`` holds the counts summed over frames (a beamstop blocks every frame). The
    region is the 4-connected component of ``total == 0`` that holds a pixel within
    ``search`` pixels of ``centre``; smaller than ``min_pixels`` is no beamstop (a
    single dead pixel is masked elsewhere). Zero counts far from the centre (Poisson
    zeros at high q) are measured zeros and stay measured.
    """
    from scipy.ndimage import label

    zero = total <= 0
    h, w = zero.shape
    r, c = int(round(centre[0])), int(round(centre[1]))
    window = zero[max(r - search, 0) : r + search + 1, max(c - search, 0) : c + search + 1]
    if not window.any():
        return np.zeros_like(zero)
    regions, _ = label(zero)
    near = regions[max(r - search, 0) : r + search + 1, max(c - search, 0) : c + search + 1]
    labels = np.unique(near[near > 0])
    found = np.isin(regions, labels)
    return found if found.sum() >= min_pixels else np.zeros_like(zero)


def gap_mask(total: np.ndarray, fraction: float = 0.95) -> np.ndarray:
    """(H, W) bool: detector gaps, rows and columns without counts between counted ones.

    A row (column) is empty when ``fraction`` or more of its pixels hold no count over
    all frames (``total``). Empty rows with counted rows on both sides are a gap; empty
    rows that reach the frame's border are not (they are the pattern's dark edge, or a
    simulation's zero wings: measured zeros).
    """
    zero = total <= 0
    return (
        _interior(zero.mean(axis=1) >= fraction)[:, None]
        | _interior(zero.mean(axis=0) >= fraction)[None, :]
    )


def _interior(empty: np.ndarray) -> np.ndarray:
    counted = np.flatnonzero(~empty)
    inside = np.zeros_like(empty)
    if len(counted):
        inside[counted[0] : counted[-1] + 1] = True
    return empty & inside


def require_some_measured(mask: np.ndarray, source: str) -> None:
    """Raise ``ScanDataError`` when a mask leaves no measured pixel."""
    if not mask.any():
        raise ScanDataError(source, "every pixel is masked", kind="all_masked")
