"""Writer of APS 34-ID-C beamtimes: the layout that ``cdiflow.formats.aps34idc`` reads.

::

    BEAMTIME/
      synthetic.spec                           the SPEC log: one ascan block per scan
      dark.tif, whitefield.tif                 full detector
      <detector>/<prefix>_S<NNNN>/<prefix>_S<NNNN>_<NNNNN>.tif   one frame per rocking step

``write_synthetic_beamtime`` writes the rocking scans that
``cdiflow.physics.beamtime.simulate_beamtime`` makes; the pieces (spec blocks, frame
folders, calibration) serve any writer of this layout. Files are a pure function of
their inputs: the spec date is fixed.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tifffile

from cdiflow.config import Config, require
from cdiflow.formats.aps34idc import DARK_NAME, WHITEFIELD_NAME

if TYPE_CHECKING:
    from cdiflow.physics.beamtime import SyntheticBeamtimeConfig

SPEC_NAME = "synthetic.spec"
_SPEC_DATE = "Thu Jan 01 00:00:00 2026"  # fixed: files are a pure function of the inputs


@dataclasses.dataclass(frozen=True)
class Aps34idcLayout(Config):
    """How the scans of a written beamtime are numbered and named."""

    first_scan: int = 1
    prefix: str = "Synth26-1a"
    detector: str = "AD34idcTIM2"  # the folder of the scan folders

    def validate(self) -> None:
        require(self.first_scan >= 0, "first_scan must be >= 0")
        require("/" not in self.prefix and self.prefix, "prefix must be a plain name")
        require("/" not in self.detector and self.detector, "detector must be a plain name")

    def scan_name(self, number: int) -> str:
        return f"{self.prefix}_S{number:04d}"

    def scan_folder(self, root: Path, number: int) -> Path:
        return root / self.detector / self.scan_name(number)


def write_calibration(root: Path, dark: np.ndarray, white: np.ndarray) -> None:
    """``dark.tif`` and ``whitefield.tif`` of the full detector."""
    tifffile.imwrite(root / DARK_NAME, dark)
    tifffile.imwrite(root / WHITEFIELD_NAME, white)


def write_spec_header(handle) -> None:
    handle.write(f"#F {SPEC_NAME}\n#E 0\n#D {_SPEC_DATE}\n#C cdiflow synthetic beamtime\n\n")


def write_spec_scan(
    handle,
    number: int,
    points: int,
    roi_offset: tuple[int, int],
    frame_size: int,
    detector_size: int,
) -> None:
    """One ``#S`` block as 34-ID-C writes it: an ascan of th, ROI lines, data rows.

    ``#UIMR5`` places the ``frame_size`` ROI at ``roi_offset`` (row, col) on the
    ``detector_size`` detector, the line the reader takes the frames' offset from.
    """
    start, step = -0.25, 0.005
    r0, c0 = roi_offset
    handle.write(
        f"#S {number}  ascan  th {start:.6f} {start + step * (points - 1):.6f}  {points - 1} 0.25\n"
        f"#D {_SPEC_DATE}\n#T 0.25  (Seconds)\n#UIMDET 34idcTIM2:\n"
        "#UIMR Name minX sizeX minY sizeY BgdWidth\n"
        f"#Readout 0 {detector_size} 0 {detector_size}\n"
        "#UIMR2  64 128 64 128 0\n"
        f"#UIMR5  {c0} {frame_size} {r0} {frame_size} 1\n#N 2\n#L Theta  Seconds\n"
    )
    for i in range(points):
        handle.write(f"{start + step * i:.6f} 0.25\n")
    handle.write("\n")


def write_frames(folder: Path, name: str, frames) -> None:
    """Frames as ``<name>_<NNNNN>.tif``, one 2D TIFF each (areaDetector's naming)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        tifffile.imwrite(folder / f"{name}_{i:05d}.tif", frame)


def write_synthetic_beamtime(
    root: str | Path,
    config: SyntheticBeamtimeConfig,
    rng: np.random.Generator,
    layout: Aps34idcLayout | None = None,
) -> dict[int, dict]:
    """Simulate a beamtime (``cdiflow.physics.beamtime``) and write it; return its truth.

    Truth per scan number: ``name``, ``bragg_pixel`` (row, col of k = 0 in the ROI
    frames), ``central_frame`` (the frame through k = 0), and the generator sample
    (``particle_seed``, ``particle_index``) whose projection is the ground truth.
    Scans are simulated and written one at a time; ``layout`` names them (default
    ``Aps34idcLayout()``). The ground-truth objects go to ``root/truth/<name>.npz``
    (``cdiflow.physics.beamtime.write_truth``), where the beamtime report finds them.
    """
    # lazy: torch; the formats modules stay torch-free at import
    from cdiflow.physics.beamtime import simulate_beamtime, write_truth

    layout = layout or Aps34idcLayout()
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    dark, white, scans = simulate_beamtime(config, rng)
    write_calibration(root, dark, white)
    truth: dict[int, dict] = {}
    with open(root / SPEC_NAME, "w") as spec:
        write_spec_header(spec)
        for scan in scans:
            number = layout.first_scan + scan.particle_index
            name = layout.scan_name(number)
            write_frames(layout.scan_folder(root, number), name, scan.frames)
            geometry = (config.roi_offset, config.frame_size, config.detector_size)
            write_spec_scan(spec, number, len(scan.frames), *geometry)
            truth[number] = {
                "name": name,
                "bragg_pixel": scan.bragg_pixel,
                "central_frame": scan.central_frame,
                "particle_seed": scan.particle_seed,
                "particle_index": scan.particle_index,
            }
    write_truth(root, truth, config)
    return truth
