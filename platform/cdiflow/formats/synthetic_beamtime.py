"""Synthetic beamtimes in the APS 34-ID-C layout, from the cdiflow forward model.

Each scan is a rocking scan of one simulated particle (``cdiflow.physics.generator``):
the particle's complex 3D field is zero-padded to D^3 (D = object_size x
``detector_oversampling``) and transformed with the centred 3D FFT; successive planes
k_z = D/2 - F/2 ... D/2 + F/2 - 1 through the Bragg peak are the F frames, so frame F//2
is the central slice. Each D x D plane is placed in a 256 x 256 ROI around the peak
pixel, scaled so the 3D maximum is ``peak_counts``, multiplied by the detector response
(whitefield / its median), Poisson sampled, offset by the dark frame and clipped at the
counter's ``saturation_level``. A beamline reader that subtracts the dark and divides by
the whitefield recovers the expected counts.

Everything is a function of the numpy Generator passed in; no clock, no global RNG.
``write_corrupt_beamtime`` writes one scan of each bad-input kind for tests.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np

from cdiflow.config import Config, require
from cdiflow.physics.generator import GeneratorConfig

SPEC_NAME = "synthetic.spec"
_SPEC_DATE = "Thu Jan 01 00:00:00 2026"  # fixed: files are a pure function of the rng


@dataclasses.dataclass(frozen=True)
class SyntheticBeamtimeConfig(Config):
    """Shape and detector of a synthetic 34-ID-C beamtime."""

    scans: int = 4
    first_scan: int = 1
    frames: int = 32  # rocking steps per scan, centred on the Bragg peak
    detector_oversampling: int = 4  # D / object_size; 4 -> oversampling 2 after 2x2 binning
    frame_size: int = 256  # ROI frames are frame_size x frame_size
    detector_size: int = 512  # dark and whitefield cover the full detector
    roi_offset: tuple[int, int] = (0, 0)  # (row, col) of the ROI on the detector
    peak_jitter: int = 8  # Bragg peak within +- this of the ROI centre, pixels
    peak_counts: float = 1.0e5  # expected counts at the 3D maximum
    dark_level: float = 2.0  # mean dark counts per pixel
    whitefield_level: float = 15000.0
    whitefield_spread: float = 0.1  # relative pixel-to-pixel gain spread
    dead_pixels: int = 8  # whitefield 0 (inside the ROI)
    saturation_level: int = 2**31 - 1  # raw counts clip here (int32 counter)
    prefix: str = "Synth26-1a"
    detector: str = "AD34idcTIM2"
    generator: GeneratorConfig = GeneratorConfig()

    def validate(self) -> None:
        require(self.scans >= 1 and self.first_scan >= 0, "scans >= 1, first_scan >= 0")
        require(self.frames >= 1, "frames must be >= 1")
        d = self.generator.object_size * self.detector_oversampling
        require(self.frames <= d, f"frames {self.frames} > 3D FFT size {d}")
        require(
            d + 2 * self.peak_jitter <= self.frame_size,
            f"diffraction of {d} pixels +- jitter {self.peak_jitter} exceeds {self.frame_size}",
        )
        r, c = self.roi_offset
        require(
            0 <= r <= self.detector_size - self.frame_size
            and 0 <= c <= self.detector_size - self.frame_size,
            f"ROI at {self.roi_offset} does not fit the detector",
        )
        require(self.peak_counts > 0 and self.dark_level >= 0, "peak_counts > 0, dark >= 0")
        require(0 <= self.whitefield_spread < 0.5, "whitefield_spread in [0, 0.5)")
        require("/" not in self.prefix and self.prefix, "prefix must be a plain name")


def scan_name(config: SyntheticBeamtimeConfig, number: int) -> str:
    return f"{config.prefix}_S{number:04d}"


def particle_volume(generator: GeneratorConfig, seed: int, index: int):
    """The complex (N, N, N) field of generator sample (seed, index), as in the data set."""
    from cdiflow.physics.generator import sample_volumes

    return sample_volumes(generator, seed, [index])[0]


def rocking_intensity(config: SyntheticBeamtimeConfig, seed: int, index: int) -> np.ndarray:
    """(F, D, D) float64 expected intensity of the planes through the Bragg peak, max 1."""
    from cdiflow.physics.fft import centred_fft3, pad_centre

    d = config.generator.object_size * config.detector_oversampling
    volume = pad_centre(particle_volume(config.generator, seed, index), d, ndim=3)
    spectrum = centred_fft3(volume)
    start = d // 2 - config.frames // 2
    planes = spectrum[start : start + config.frames].abs().double() ** 2
    return (planes / spectrum.abs().max().double() ** 2).numpy()


def detector_calibration(
    config: SyntheticBeamtimeConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Dark (int32) and whitefield (float32) maps of the full detector."""
    size = config.detector_size
    dark = rng.poisson(config.dark_level, (size, size)).astype(np.int32)
    gain = 1.0 + config.whitefield_spread * rng.standard_normal((size, size))
    white = (config.whitefield_level * np.clip(gain, 0.5, 1.5)).astype(np.float32)
    r0, c0 = config.roi_offset
    rows = rng.integers(r0, r0 + config.frame_size, config.dead_pixels)
    cols = rng.integers(c0, c0 + config.frame_size, config.dead_pixels)
    white[rows, cols] = 0.0
    return dark, white


def simulate_scan(
    config: SyntheticBeamtimeConfig,
    intensity: np.ndarray,
    dark: np.ndarray,
    white: np.ndarray,
    rng: np.random.Generator,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Raw int32 frames (F, S, S) and the Bragg peak pixel (row, col) in the ROI."""
    s, d = config.frame_size, intensity.shape[-1]
    jitter = rng.integers(-config.peak_jitter, config.peak_jitter + 1, size=2)
    peak = (s // 2 + int(jitter[0]), s // 2 + int(jitter[1]))
    expected = np.zeros((intensity.shape[0], s, s))
    r, c = peak[0] - d // 2, peak[1] - d // 2
    expected[:, r : r + d, c : c + d] = intensity * config.peak_counts
    r0, c0 = config.roi_offset
    window = (slice(r0, r0 + s), slice(c0, c0 + s))
    response = white[window] / np.median(white[white > 0])
    counts = rng.poisson(expected * response) + dark[window]
    return np.minimum(counts, config.saturation_level).astype(np.int32), peak


def write_spec_header(handle, config: SyntheticBeamtimeConfig) -> None:
    handle.write(f"#F {SPEC_NAME}\n#E 0\n#D {_SPEC_DATE}\n#C cdiflow synthetic beamtime\n\n")


def write_spec_scan(handle, config: SyntheticBeamtimeConfig, number: int, points: int) -> None:
    """One ``#S`` block as 34-ID-C writes it: an ascan of th, ROI lines, data rows."""
    start, step = -0.25, 0.005
    r0, c0 = config.roi_offset
    size = config.frame_size
    handle.write(
        f"#S {number}  ascan  th {start:.6f} {start + step * (points - 1):.6f}  {points - 1} 0.25\n"
        f"#D {_SPEC_DATE}\n#T 0.25  (Seconds)\n#UIMDET 34idcTIM2:\n"
        "#UIMR Name minX sizeX minY sizeY BgdWidth\n"
        f"#Readout 0 {config.detector_size} 0 {config.detector_size}\n"
        "#UIMR2  64 128 64 128 0\n"
        f"#UIMR5  {c0} {size} {r0} {size} 1\n#N 2\n#L Theta  Seconds\n"
    )
    for i in range(points):
        handle.write(f"{start + step * i:.6f} 0.25\n")
    handle.write("\n")


def write_frames(folder: Path, name: str, frames: np.ndarray) -> None:
    """Frames as ``<name>_<NNNNN>.tif``, one 2D TIFF each (areaDetector's naming)."""
    import tifffile

    folder.mkdir(parents=True, exist_ok=True)
    for i, frame in enumerate(frames):
        tifffile.imwrite(folder / f"{name}_{i:05d}.tif", frame)


def write_synthetic_beamtime(
    root: str | Path, config: SyntheticBeamtimeConfig, rng: np.random.Generator
) -> dict[int, dict]:
    """Write a beamtime folder; return per scan number its truth.

    Truth per scan: name, ``bragg_pixel`` (row, col of k = 0 in the ROI frames),
    ``central_frame`` (the frame through k = 0), and the generator sample
    (``particle_seed``, ``particle_index``) whose projection is the ground truth.

    Layout: ``root/synthetic.spec``, ``root/dark.tif``, ``root/whitefield.tif`` and
    ``root/<detector>/<prefix>_S<NNNN>/<prefix>_S<NNNN>_<NNNNN>.tif``.
    """
    import tifffile

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    particle_seed = int(rng.integers(2**31))
    dark, white = detector_calibration(config, rng)
    tifffile.imwrite(root / "dark.tif", dark)
    tifffile.imwrite(root / "whitefield.tif", white)
    truth: dict[int, dict] = {}
    with open(root / SPEC_NAME, "w") as spec:
        write_spec_header(spec, config)
        for i in range(config.scans):
            number = config.first_scan + i
            intensity = rocking_intensity(config, particle_seed, i)
            frames, peak = simulate_scan(config, intensity, dark, white, rng)
            name = scan_name(config, number)
            write_frames(root / config.detector / name, name, frames)
            write_spec_scan(spec, config, number, config.frames)
            truth[number] = {
                "name": name,
                # k = 0 of the particle: the brightest pixel only for weak phase; a strong
                # phase moves the intensity maximum (and the rocking-curve peak) off it.
                "bragg_pixel": peak,
                "central_frame": config.frames // 2,
                "particle_seed": particle_seed,
                "particle_index": i,
            }
    return truth


def clone_beamtime(source: Path, target: Path) -> Path:
    """Copy a beamtime folder (used to derive broken variants from a good one)."""
    shutil.copytree(source, target)
    return target


# --- bad input for tests ---------------------------------------------------------------


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


def write_corrupt_beamtime(
    root: str | Path, rng: np.random.Generator, config: SyntheticBeamtimeConfig | None = None
) -> tuple[Path, list[CorruptCase]]:
    """Write a beamtime with two good scans and one scan per bad-input kind, plus variants.

    Returns the beamtime folder and the cases. Kinds (and the error kind expected):
    truncated TIFF (unreadable), missing frames (missing_frames), NaN counts
    (nan_counts), negative counts (negative_counts), an all-zero frame (all_zero), a
    frame of the wrong shape (wrong_shape), a saturated Bragg peak (saturated_peak), a
    spec entry without data (no_data), a scan folder that is not a scan (not_a_scan),
    beamtime variants without dark.tif / whitefield.tif (missing_calibration), and an
    HDF5 file addressed at a path it does not hold or that is not HDF5 (bad_key,
    unreadable).
    """
    import h5py
    import tifffile

    root = Path(root)
    config = config or SyntheticBeamtimeConfig(scans=2, frames=8)
    beamtime = root / "beamtime"
    write_synthetic_beamtime(beamtime, config, rng)
    dark = tifffile.imread(beamtime / "dark.tif")
    white = tifffile.imread(beamtime / "whitefield.tif")
    intensity = rocking_intensity(config, int(rng.integers(2**31)), 0)
    good, _ = simulate_scan(config, intensity, dark, white, rng)
    cases: list[CorruptCase] = []
    number = config.first_scan + config.scans
    frame_kinds = ("nan_counts", "negative_counts", "all_zero", "wrong_shape", "saturated_peak")
    expected = {k: k for k in frame_kinds}
    expected.update(truncated_tiff="unreadable", missing_frames="missing_frames")
    with open(beamtime / SPEC_NAME, "a") as spec:
        for kind in (*frame_kinds, "truncated_tiff", "missing_frames"):
            name = scan_name(config, number)
            folder = beamtime / config.detector / name
            write_frames(folder, name, _break_frames(kind, good, rng))
            if kind == "truncated_tiff":
                path = folder / f"{name}_{1:05d}.tif"
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
            if kind == "missing_frames":
                (folder / f"{name}_{2:05d}.tif").unlink()
            write_spec_scan(spec, config, number, len(good))
            cases.append(CorruptCase(kind, str(beamtime), number, expected[kind]))
            number += 1
        write_spec_scan(spec, config, number, len(good))  # spec entry, no folder
        cases.append(CorruptCase("spec_without_data", str(beamtime), number, "no_data"))
        number += 1
        folder = beamtime / config.detector / scan_name(config, number)
        folder.mkdir(parents=True)
        (folder / "notes.txt").write_text("alignment notes, no frames\n")
        write_spec_scan(spec, config, number, len(good))
        cases.append(CorruptCase("not_a_scan", str(beamtime), number, "not_a_scan"))
    for missing in ("dark.tif", "whitefield.tif"):
        variant = clone_beamtime(beamtime, root / f"beamtime_without_{missing[:-4]}")
        (variant / missing).unlink()
        cases.append(
            CorruptCase(
                "missing_calibration", str(variant), config.first_scan, "missing_calibration"
            )
        )
    with h5py.File(root / "scan.h5", "w") as h5:
        h5["/entry/data/data"] = good.astype(np.float32)
    cases.append(
        CorruptCase("unreadable_hdf5", f"{root / 'scan.h5'}:/entry/nothing", None, "bad_key")
    )
    (root / "not_hdf5.h5").write_bytes(b"this is not an HDF5 file\n" * 8)
    cases.append(
        CorruptCase("unreadable_hdf5", f"{root / 'not_hdf5.h5'}:/entry/data", None, "unreadable")
    )
    return beamtime, cases
