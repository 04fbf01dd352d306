"""APS 34-ID-C beamtimes: SPEC log + per-scan TIFF folders + dark + whitefield.

Layout, as the beamline writes it::

    BEAMTIME/
      *.spec                                   the SPEC log (one file)
      dark.tif, whitefield.tif                 full detector (e.g. 512 x 512)
      <detector>/<prefix>_S<NNNN>/<prefix>_S<NNNN>_<NNNNN>.tif   one frame per rocking step

``discover_beamtime`` lists the scans without reading any frame; ``read_scan`` loads
one as a float32 (F, H, W) stack with dark subtraction and flat-field correction.

Where the frames sit on the detector: the frames are an ROI (256 x 256) of the full
detector on which dark and whitefield were taken. Each spec scan lists the
areaDetector ROIs in ``#UIMR<k> minX sizeX minY sizeY`` lines; the rule is: the ROI
whose size equals the frame shape gives the offset (an error if none or several
different ones match, unless ``roi_offset`` is given). On the real scan 54 this is
``#UIMR5 0 256 0 256`` -> offset (0, 0), and the data agree: the 11 zero pixels of the
whitefield in that quadrant are all zero in every frame, and no other offset lines up
as many of them. The ROI changes between scans of that beamtime (``150 256 150 256`` in
some), which is why the rule reads it per scan instead of fixing it.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import tifffile

from cdiflow.formats.scan import (
    CalibrationMissing,
    NotAScan,
    Scan,
    ScanDataError,
    ScanNotFound,
    ScanReadError,
    check_frames_array,
    check_source_size,
    declared_nbytes,
    files_fingerprint,
)
from cdiflow.formats.spec import SpecScan, read_spec
from cdiflow.formats.tiff import read_tiff_stack

DARK_NAME = "dark.tif"
WHITEFIELD_NAME = "whitefield.tif"
_SCAN_FOLDER = re.compile(r"^(?P<prefix>.+)_S(?P<number>\d{4,})$")


@dataclasses.dataclass(frozen=True)
class ScanEntry:
    """One scan of a beamtime as discovered (no frame read yet).

    ``folder`` is None for a spec entry without data; ``spec`` is None for a data
    folder that the spec file does not list.
    """

    number: int
    name: str
    folder: Path | None
    frame_paths: tuple[Path, ...]
    spec: SpecScan | None

    @property
    def command(self) -> str:
        return self.spec.command if self.spec else ""

    @property
    def motor(self) -> str:
        return self.spec.motor if self.spec else ""

    @property
    def points(self) -> int | None:
        return self.spec.points if self.spec else None


@dataclasses.dataclass(frozen=True)
class Beamtime:
    """A discovered beamtime folder: its spec file, calibration files and scans."""

    root: Path
    spec_path: Path | None
    dark_path: Path
    whitefield_path: Path
    entries: tuple[ScanEntry, ...]

    def scans(self, numbers: list[int] | None = None) -> tuple[ScanEntry, ...]:
        """The scans to process.

        With ``numbers`` None: every scan that has a data folder (a beamtime's spec log
        also lists hundreds of alignment scans that saved no frames). With explicit
        numbers: exactly those, in the given order; a number that the spec lists but
        has no folder, or that is unknown, comes back as an entry without folder, and
        ``read_scan`` raises ``ScanNotFound`` for it.
        """
        if numbers is None:
            return tuple(e for e in self.entries if e.folder is not None)
        by_number = {e.number: e for e in self.entries}
        return tuple(by_number.get(n, ScanEntry(n, f"S{n:04d}", None, (), None)) for n in numbers)


def parse_scan_selection(text: str) -> list[int]:
    """``"54,60-62"`` -> ``[54, 60, 61, 62]``; raises ``ValueError`` on bad syntax."""
    numbers: list[int] = []
    for part in text.split(","):
        part = part.strip()
        m = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
        if not m:
            raise ValueError(f"bad scan selection {part!r} in {text!r} (use e.g. 54,60-80)")
        first, last = int(m.group(1)), int(m.group(2) or m.group(1))
        if last < first:
            raise ValueError(f"bad scan range {part!r}: end before start")
        numbers.extend(range(first, last + 1))
    return numbers


def _frame_paths(folder: Path) -> tuple[Path, ...]:
    pattern = re.compile(re.escape(folder.name) + r"_(\d+)\.tiff?$")
    return tuple(sorted(p for p in folder.iterdir() if pattern.match(p.name)))


def scan_fingerprint(beamtime: Beamtime, entry: ScanEntry) -> str:
    """``files_fingerprint`` of one scan's input: its frames, the dark and the whitefield.

    The spec file is left out: the beamline appends every new scan to it, and a scan's
    own spec lines do not change once written.
    """
    paths = (*entry.frame_paths, beamtime.dark_path, beamtime.whitefield_path)
    return files_fingerprint(paths, label=f"{entry.folder}\0{entry.number}")


def discover_beamtime(root: str | Path) -> Beamtime:
    """List the scans of a 34-ID-C beamtime folder without reading frames.

    Raises
    ------
    NotAScan
        ``root`` is not a folder, or holds neither a spec file nor scan folders.
    ScanReadError
        Several spec files, an unreadable spec file, or a folder that cannot be listed.
    """
    try:
        return _discover(Path(root))
    except OSError as exc:  # permissions, a folder vanishing under us
        raise ScanReadError(exc.filename or root, f"cannot list ({exc.strerror})") from None


def _discover(root: Path) -> Beamtime:
    if not root.is_dir():
        raise NotAScan(root, "not a beamtime folder")
    specs = sorted(root.glob("*.spec"))
    if len(specs) > 1:
        raise ScanReadError(root, f"several spec files: {[p.name for p in specs]}", "bad_spec")
    spec = read_spec(specs[0]) if specs else {}
    folders: dict[int, Path] = {}
    for detector in sorted(p for p in root.iterdir() if p.is_dir()):
        for folder in sorted(p for p in detector.iterdir() if p.is_dir()):
            m = _SCAN_FOLDER.match(folder.name)
            if m:
                folders[int(m.group("number"))] = folder
    if not spec and not folders:
        raise NotAScan(root, "no *.spec file and no <detector>/<prefix>_S<NNNN> scan folders")
    entries = []
    for number in sorted(set(spec) | set(folders)):
        folder = folders.get(number)
        name = folder.name if folder else f"S{number:04d}"
        paths = _frame_paths(folder) if folder else ()
        entries.append(ScanEntry(number, name, folder, paths, spec.get(number)))
    return Beamtime(
        root=root,
        spec_path=specs[0] if specs else None,
        dark_path=root / DARK_NAME,
        whitefield_path=root / WHITEFIELD_NAME,
        entries=tuple(entries),
    )


@dataclasses.dataclass(frozen=True, eq=False)
class Calibration:
    """Dark counts and flat-field gain over the full detector (float32, H x W)."""

    dark: np.ndarray
    gain: np.ndarray
    bad: np.ndarray
    dark_path: str
    whitefield_path: str


def _read_tiff(path: Path, error: type[ScanReadError] = ScanReadError) -> np.ndarray:
    """Read one TIFF image; every failure becomes ``error`` naming the file."""
    return read_tiff_stack(path, error)


def read_frames(paths: tuple[Path, ...], max_bytes: int | None = None) -> np.ndarray:
    """Read one-page TIFF frames straight into one preallocated (F, H, W) array.

    Raises ``ScanDataError`` (kind ``wrong_shape``) for a frame whose shape or dtype
    differs from the first or that is not one 2D page, ``ScanReadError`` for a missing
    or corrupt file, and ``SourceTooLarge`` when the stack (from the first frame's
    header) would exceed ``max_bytes``, before anything is allocated or read.
    """
    stack: np.ndarray | None = None
    for i, path in enumerate(paths):
        try:
            with tifffile.TiffFile(path) as tif:
                if len(tif.pages) != 1 or len(tif.pages[0].shape) != 2:
                    shape = tif.pages[0].shape if len(tif.pages) else ()
                    raise ScanDataError(
                        path,
                        f"{len(tif.pages)} page(s) of shape {shape}, not one 2D frame",
                        kind="wrong_shape",
                    )
                page = tif.pages[0]
                if stack is None:
                    nbytes = len(paths) * declared_nbytes(page.shape, page.dtype)
                    check_source_size(nbytes, max_bytes, path.parent)
                    stack = np.empty((len(paths), *page.shape), page.dtype)
                elif page.shape != stack.shape[1:] or page.dtype != stack.dtype:
                    raise ScanDataError(
                        path,
                        f"frame {page.shape} {page.dtype} differs from the first frame "
                        f"{stack.shape[1:]} {stack.dtype}",
                        kind="wrong_shape",
                    )
                page.asarray(out=stack[i])
        except ScanReadError:
            raise
        except FileNotFoundError:
            raise ScanReadError(path, "file not found") from None
        except Exception as exc:  # tifffile raises many types on corrupt files
            raise ScanReadError(path, f"unreadable TIFF ({type(exc).__name__}: {exc})") from None
    assert stack is not None
    return stack


def load_calibration(beamtime: Beamtime, flat_min_fraction: float = 0.1) -> Calibration:
    """Read dark.tif and whitefield.tif and turn the whitefield into a per-pixel gain.

    gain = median(whitefield) / whitefield, so a flat-corrected frame keeps the count
    scale of an average pixel; pixels whose whitefield is below ``flat_min_fraction`` of
    the median (dead or nearly dead) get gain 0 and are flagged bad.

    Raises
    ------
    CalibrationMissing
        Either file is missing, unreadable, not 2D, not of equal shape, or non-finite.
    """
    dark = _read_tiff(beamtime.dark_path, CalibrationMissing)
    white = _read_tiff(beamtime.whitefield_path, CalibrationMissing)
    for path, arr in ((beamtime.dark_path, dark), (beamtime.whitefield_path, white)):
        if arr.ndim != 2 or arr.dtype.kind not in "uif" or not np.isfinite(arr).all():
            raise CalibrationMissing(path, f"not a finite 2D image (shape {arr.shape})")
    if dark.shape != white.shape:
        raise CalibrationMissing(
            beamtime.whitefield_path, f"shape {white.shape} differs from dark {dark.shape}"
        )
    white = white.astype(np.float32)
    positive = white[white > 0]
    if positive.size == 0:
        raise CalibrationMissing(beamtime.whitefield_path, "whitefield is all zero")
    median = float(np.median(positive))
    bad = white < flat_min_fraction * median
    gain = np.where(bad, 0.0, median / np.where(bad, 1.0, white)).astype(np.float32)
    return Calibration(
        dark.astype(np.float32), gain, bad, str(beamtime.dark_path), str(beamtime.whitefield_path)
    )


def roi_offset_from_spec(
    spec: SpecScan | None, frame_shape: tuple[int, int], detector_shape: tuple[int, int]
) -> tuple[int, int]:
    """(row, col) of the frames' first pixel on the full detector (module docstring rule)."""
    if tuple(frame_shape) == tuple(detector_shape):
        return (0, 0)
    where = f"spec scan {spec.number}" if spec else "no spec entry"
    if spec is None:
        raise ValueError(f"frames {frame_shape} are an ROI but there is {where} to place it")
    matches = {(r.min_y, r.min_x) for r in spec.rois if (r.size_y, r.size_x) == tuple(frame_shape)}
    if len(matches) != 1:
        what = "no" if not matches else f"several ({sorted(matches)})"
        raise ValueError(f"{what} #UIMR ROI of size {frame_shape} in {where}")
    return matches.pop()


def _check_sequence(entry: ScanEntry) -> None:
    """Frame numbers must run 0..n-1 and n must equal the spec's logged points."""
    folder = entry.folder
    assert folder is not None
    numbers = [int(p.stem.rsplit("_", 1)[1]) for p in entry.frame_paths]
    expected = entry.spec.points if entry.spec and entry.spec.points else None
    count = max(numbers[-1] + 1, expected or 0)
    missing = sorted(set(range(count)) - set(numbers))
    if missing:
        shown = ", ".join(str(i) for i in missing[:5]) + (" ..." if len(missing) > 5 else "")
        raise ScanDataError(
            folder,
            f"missing frames: {len(missing)} of {count} absent (numbers {shown})",
            kind="missing_frames",
        )


def correct_frames(raw: np.ndarray, dark: np.ndarray, gain: np.ndarray) -> np.ndarray:
    """clip(raw - dark, 0) * gain as float32 (F, H, W); small negatives are dark noise.

    Frame by frame, so each frame's three passes run on data still in cache, and no
    whole-stack temporary is allocated.
    """
    corrected = np.empty(raw.shape, np.float32)
    dark = np.ascontiguousarray(dark, np.float32)
    gain = np.ascontiguousarray(gain, np.float32)
    for frame, out in zip(raw, corrected, strict=True):
        np.subtract(frame, dark, out=out, dtype=np.float32)
        np.maximum(out, 0.0, out=out)
        out *= gain
    return corrected


def _check_entry(beamtime: Beamtime, entry: ScanEntry) -> None:
    """Refuse, before reading any frame, an entry that is not a whole 34-ID-C scan."""
    if entry.folder is None:
        what = "spec entry has no data folder" if entry.spec else "no such scan"
        raise ScanNotFound(beamtime.root, f"scan {entry.number}: {what}")
    if entry.spec is None:
        raise ScanNotFound(entry.folder, "data folder without a spec entry", kind="no_spec")
    if not entry.frame_paths:
        contents = sorted(p.name for p in entry.folder.iterdir())[:3]
        raise NotAScan(
            entry.folder, f"no {entry.folder.name}_NNNNN.tif frames (holds {contents or 'nothing'})"
        )
    _check_sequence(entry)


def _roi_origin(entry: ScanEntry, shape, detector, roi_offset) -> tuple[int, int]:
    """(row, col) of the frames on the detector; ``wrong_shape`` when they do not fit."""
    try:
        r0, c0 = roi_offset or roi_offset_from_spec(entry.spec, shape, detector)
    except ValueError as exc:
        raise ScanDataError(entry.folder, str(exc), kind="wrong_shape") from None
    if r0 < 0 or c0 < 0 or r0 + shape[0] > detector[0] or c0 + shape[1] > detector[1]:
        fit = f"frames {shape} at offset {(r0, c0)} do not fit the detector {detector}"
        raise ScanDataError(entry.folder, fit, kind="wrong_shape")
    return r0, c0


def read_scan(
    beamtime: Beamtime,
    entry: ScanEntry,
    calibration: Calibration | None = None,
    roi_offset: tuple[int, int] | None = None,
    max_bytes: int | None = None,
) -> Scan:
    """Load one scan: raw frames, dark subtraction, flat-field correction.

    Parameters
    ----------
    beamtime, entry : from ``discover_beamtime`` / ``Beamtime.scans``.
    calibration : preloaded ``load_calibration(beamtime)`` (load it once per worker);
        loaded here when None.
    roi_offset : (row, col) override of the ROI rule.
    max_bytes : refuse a scan whose raw frames add up to more (``SourceTooLarge``),
        before reading them; None: no limit.

    Returns
    -------
    Scan with ``frames`` = clip(raw - dark, 0) * gain as (F, H, W) float32, ``raw`` the
    int counts and ``bad_pixels`` the calibration's bad pixels inside the ROI.

    Raises
    ------
    ScanNotFound, NotAScan, ScanDataError, CalibrationMissing, ScanReadError,
    SourceTooLarge
    """
    _check_entry(beamtime, entry)
    raw = check_frames_array(read_frames(entry.frame_paths, max_bytes), entry.folder)
    cal = calibration if calibration is not None else load_calibration(beamtime)
    r0, c0 = _roi_origin(entry, raw.shape[1:], cal.dark.shape, roi_offset)
    window = (slice(r0, r0 + raw.shape[1]), slice(c0, c0 + raw.shape[2]))
    return Scan(
        name=entry.name,
        source=str(entry.folder),
        frames=correct_frames(raw, cal.dark[window], cal.gain[window]),
        raw=raw,
        bad_pixels=cal.bad[window].copy(),
        metadata={
            "layout": "aps-34idc",
            "scan_number": entry.number,
            "command": entry.command,
            "motor": entry.motor,
            "spec_points": entry.points,
            "roi_offset": [int(r0), int(c0)],
            "dark": cal.dark_path,
            "whitefield": cal.whitefield_path,
        },
    )
