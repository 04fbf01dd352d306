"""Test fixtures: beamtimes with one broken scan of each bad-input kind.

Only tests (unit and integration) use this module; no production code imports it.
``write_corrupt_beamtime`` writes a good synthetic beamtime
(``cdiflow.formats.aps34idc_writer``) and next to its good scans one scan per way input
goes bad, each with the ``ScanError.kind`` a reader must answer.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import h5py
import numpy as np
import tifffile

from cdiflow.formats.aps34idc import DARK_NAME, WHITEFIELD_NAME
from cdiflow.formats.aps34idc_writer import (
    SPEC_NAME,
    Aps34idcLayout,
    write_frames,
    write_spec_scan,
    write_synthetic_beamtime,
)
from cdiflow.formats.location import Location
from cdiflow.physics.beamtime import SyntheticBeamtimeConfig, rocking_intensity, simulate_scan

_FRAME_KINDS = ("nan_counts", "negative_counts", "all_zero", "wrong_shape", "saturated_peak")
_LAYOUT = Aps34idcLayout()


@dataclasses.dataclass(frozen=True)
class CorruptCase:
    """One broken input: what to open and which ``ScanError.kind`` must come back.

    ``scan`` is the scan number inside the beamtime folder ``source``; when it is None,
    ``source`` is an ``open_scan`` source (``file.h5:/path``).
    """

    kind: str
    source: str
    scan: int | None
    error_kind: str


def _break_frames(kind: str, frames: np.ndarray, rng: np.random.Generator) -> np.ndarray | list:
    """A copy of good raw frames (F, S, S) broken in the way ``kind`` names."""
    f, s, _ = frames.shape
    if kind in ("nan_counts", "negative_counts"):
        bad = frames.astype(np.float32)  # a float TIFF, as a processing tool might write
        r, c = rng.integers(0, s, 2)
        bad[f // 2, r, c] = np.nan if kind == "nan_counts" else -5.0
        return bad
    if kind == "all_zero":
        bad = frames.copy()
        bad[f // 3] = 0
        return bad
    if kind == "wrong_shape":
        return [fr if i != f // 2 else fr[: s - 56] for i, fr in enumerate(frames)]
    if kind == "saturated_peak":
        # A 16-bit counter: the peak region clips at 2^16 - 1.
        return np.minimum(frames.astype(np.int64) * 50, 2**16 - 1).astype(np.int32)
    return frames


def _good_scan(beamtime: Path, config: SyntheticBeamtimeConfig, rng) -> np.ndarray:
    """One more good scan's raw frames, on the beamtime's own dark and whitefield."""
    dark = tifffile.imread(beamtime / DARK_NAME)
    white = tifffile.imread(beamtime / WHITEFIELD_NAME)
    intensity = rocking_intensity(config, int(rng.integers(2**31)), 0)
    return simulate_scan(config, intensity, dark, white, rng)[0]


def _write_bad_scans(
    beamtime: Path, config: SyntheticBeamtimeConfig, good: np.ndarray, rng
) -> list[CorruptCase]:
    """Append to the beamtime one scan per bad-frames kind and per bad-folder kind."""
    cases: list[CorruptCase] = []
    number = _LAYOUT.first_scan + config.scans
    expected = {k: k for k in _FRAME_KINDS}
    expected.update(truncated_tiff="unreadable", missing_frames="missing_frames")
    geometry = (config.roi_offset, config.frame_size, config.detector_size)
    with open(beamtime / SPEC_NAME, "a") as spec:
        for kind in (*_FRAME_KINDS, "truncated_tiff", "missing_frames"):
            name = _LAYOUT.scan_name(number)
            folder = _LAYOUT.scan_folder(beamtime, number)
            write_frames(folder, name, _break_frames(kind, good, rng))
            if kind == "truncated_tiff":
                path = folder / f"{name}_{1:05d}.tif"
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
            if kind == "missing_frames":
                (folder / f"{name}_{2:05d}.tif").unlink()
            write_spec_scan(spec, number, len(good), *geometry)
            cases.append(CorruptCase(kind, str(beamtime), number, expected[kind]))
            number += 1
        write_spec_scan(spec, number, len(good), *geometry)  # spec entry, no folder
        cases.append(CorruptCase("spec_without_data", str(beamtime), number, "no_data"))
        number += 1
        folder = _LAYOUT.scan_folder(beamtime, number)
        folder.mkdir(parents=True)
        (folder / "notes.txt").write_text("alignment notes, no frames\n")
        write_spec_scan(spec, number, len(good), *geometry)
        cases.append(CorruptCase("not_a_scan", str(beamtime), number, "not_a_scan"))
    return cases


def _write_calibration_variants(root: Path, beamtime: Path) -> list[CorruptCase]:
    """Copies of the beamtime without dark.tif, then without whitefield.tif."""
    cases = []
    for missing in (DARK_NAME, WHITEFIELD_NAME):
        variant = root / f"beamtime_without_{missing.removesuffix('.tif')}"
        shutil.copytree(beamtime, variant)
        (variant / missing).unlink()
        cases.append(
            CorruptCase(
                "missing_calibration", str(variant), _LAYOUT.first_scan, "missing_calibration"
            )
        )
    return cases


def _write_bad_hdf5(root: Path, good: np.ndarray) -> list[CorruptCase]:
    """An HDF5 file addressed at a path it does not hold, and a file that is not HDF5."""
    with h5py.File(root / "scan.h5", "w") as h5:
        h5["/entry/data/data"] = good.astype(np.float32)
    (root / "not_hdf5.h5").write_bytes(b"this is not an HDF5 file\n" * 8)
    return [
        CorruptCase("unreadable_hdf5", f"{root / 'scan.h5'}:/entry/nothing", None, "bad_key"),
        CorruptCase("unreadable_hdf5", f"{root / 'not_hdf5.h5'}:/entry/data", None, "unreadable"),
    ]


def write_corrupt_beamtime(
    root: str | Path, rng: np.random.Generator, config: SyntheticBeamtimeConfig | None = None
) -> tuple[Path, list[CorruptCase]]:
    """Write a beamtime with good scans and one scan per bad-input kind, plus variants.

    Returns the beamtime folder (``root/beamtime``) and the cases. Kinds (and the error
    kind expected): truncated TIFF (unreadable), missing frames (missing_frames), NaN
    counts (nan_counts), negative counts (negative_counts), an all-zero frame
    (all_zero), a frame of the wrong shape (wrong_shape), a saturated Bragg peak
    (saturated_peak), a spec entry without data (no_data), a scan folder that is not a
    scan (not_a_scan), beamtime variants without dark.tif / whitefield.tif
    (missing_calibration), and an HDF5 file addressed at a path it does not hold or
    that is not HDF5 (bad_key, unreadable). The default config has two good scans.
    """
    root = Path(root)
    config = config or SyntheticBeamtimeConfig(scans=2, frames=8)
    beamtime = root / "beamtime"
    write_synthetic_beamtime(beamtime, config, rng, _LAYOUT)
    good = _good_scan(beamtime, config, rng)
    cases = _write_bad_scans(beamtime, config, good, rng)
    cases += _write_calibration_variants(root, beamtime)
    cases += _write_bad_hdf5(root, good)
    return beamtime, cases


def objects_under(uri: str) -> dict[str, bytes]:
    """Every object under an object-storage ``uri`` by relative key (folder markers left
    out): what tests compare with a local folder's files."""
    from pyarrow import fs

    location = Location.parse(uri)
    infos = location.filesystem.get_file_info(fs.FileSelector(location.fs_path, recursive=True))
    prefix = location.fs_path + "/"
    out = {}
    for info in sorted(infos, key=lambda i: i.path):
        if info.type == fs.FileType.File:
            with location.filesystem.open_input_stream(info.path) as source:
                out[info.path[len(prefix) :]] = source.read()
    return out
