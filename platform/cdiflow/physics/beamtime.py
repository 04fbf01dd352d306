"""Beamtime simulation: rocking scans of generator particles, as a counting detector records them.

Each scan is a rocking scan of one simulated particle, sample (seed, index) of
``cdiflow.physics.generator`` (so its projection is the data set's ground truth). The
frames are planes k_z = -F/2 ... F/2 - 1 through the Bragg peak of the particle's 3D
diffraction at D = object_size x ``detector_oversampling`` pixels per axis
(``cdiflow.physics.diffraction.rocking_patterns``: the Fourier-slice forward model off
the peak), so frame F//2 is the central slice. Each D x D plane is placed in a
``frame_size`` ROI around the peak pixel, scaled so the 3D maximum is ``peak_counts``,
and recorded by the detector model of ``cdiflow.physics.detector``: whitefield gain
(relative to its median) with dead pixels, Poisson counts, plus the dark frame, clipped
at the counter's ``saturation_level``. A beamline reader that subtracts the dark and
divides by the whitefield recovers the expected counts.

Everything is a function of the numpy Generator passed in; no clock, no global RNG.
Writing a beamtime to disk is the job of ``cdiflow.formats.aps34idc_writer``; its truth
(``write_truth``) goes beside it, in ``BEAMTIME/truth/<scan name>.npz``, where the
beamtime report finds it from the scan's source path (``truth_file``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from cdiflow.config import Config, require
from cdiflow.physics.detector import dark_frame, dead_pixel_mask, gain_map, raw_counts
from cdiflow.physics.diffraction import rocking_patterns
from cdiflow.physics.fft import centred_fft2, pad_centre
from cdiflow.physics.generator import GeneratorConfig, sample_volumes


@dataclasses.dataclass(frozen=True)
class SyntheticBeamtimeConfig(Config):
    """Scans, rocking curve and detector of a synthetic beamtime."""

    scans: int = 4
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
    generator: GeneratorConfig = GeneratorConfig()

    def validate(self) -> None:
        require(self.scans >= 1, "scans must be >= 1")
        require(self.frames >= 1, "frames must be >= 1")
        d = self.diffraction_size
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

    @property
    def diffraction_size(self) -> int:
        """D: pixels per axis of the particle's 3D diffraction on the detector."""
        return self.generator.object_size * self.detector_oversampling

    @property
    def roi(self) -> tuple[slice, slice]:
        """(rows, cols) of the ROI frames on the full detector."""
        (r0, c0), s = self.roi_offset, self.frame_size
        return slice(r0, r0 + s), slice(c0, c0 + s)


@dataclasses.dataclass(frozen=True)
class SimulatedScan:
    """One rocking scan and its truth.

    ``frames`` (F, S, S) int32 raw counts; ``bragg_pixel`` (row, col) of k = 0 in the ROI
    frames (the brightest pixel only for a weak phase: a strong phase moves the intensity
    maximum, and the rocking-curve peak, off it); ``central_frame`` the frame through
    k = 0; the generator sample (``particle_seed``, ``particle_index``) whose projection
    is the ground truth.
    """

    frames: np.ndarray
    bragg_pixel: tuple[int, int]
    central_frame: int
    particle_seed: int
    particle_index: int


def rocking_intensity(config: SyntheticBeamtimeConfig, seed: int, index: int) -> np.ndarray:
    """(F, D, D) float64 expected intensity of the planes through the Bragg peak, max 1.

    The scale is the maximum over all D planes of the 3D diffraction, so a strong
    phase whose brightest speckle lies outside the F scanned planes scans below 1.
    """
    d = config.diffraction_size
    volume = sample_volumes(config.generator, seed, [index])[0]
    planes = rocking_patterns(volume, d, range(-(d // 2), d - d // 2)).double() ** 2
    start = d // 2 - config.frames // 2
    return (planes[start : start + config.frames] / planes.max()).numpy()


def detector_calibration(
    config: SyntheticBeamtimeConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Dark (int32) and whitefield (float32, 0 on the dead pixels) of the full detector."""
    shape = (config.detector_size, config.detector_size)
    dark = dark_frame(shape, config.dark_level, rng)
    white = gain_map(shape, config.whitefield_level, config.whitefield_spread, rng)
    white[~dead_pixel_mask(shape, config.roi, config.dead_pixels, rng)] = 0.0
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
    gain = white[config.roi] / np.median(white[white > 0])
    return raw_counts(expected, gain, dark[config.roi], config.saturation_level, rng), peak


def simulate_beamtime(
    config: SyntheticBeamtimeConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, Iterator[SimulatedScan]]:
    """Dark, whitefield and the scans (lazily, one at a time) of a synthetic beamtime.

    The particle seed and the calibration are drawn now; each scan draws from ``rng``
    when it is reached, so iterate the scans to the end before drawing anything else
    from ``rng`` (the beamtime is then a pure function of the generator's state).
    """
    particle_seed = int(rng.integers(2**31))
    dark, white = detector_calibration(config, rng)
    return dark, white, _scans(config, particle_seed, dark, white, rng)


def _scans(config, particle_seed, dark, white, rng) -> Iterator[SimulatedScan]:
    for index in range(config.scans):
        intensity = rocking_intensity(config, particle_seed, index)
        frames, peak = simulate_scan(config, intensity, dark, white, rng)
        yield SimulatedScan(frames, peak, config.frames // 2, particle_seed, index)


TRUTH_DIR = "truth"


def rocking_truth(config: SyntheticBeamtimeConfig, seed: int, index: int) -> np.ndarray:
    """(F, N, N) complex64, centred: per frame, the 2D object that frame is the |FFT| of.

    Frame f is the plane k_z = q = f - F // 2 (``rocking_intensity``): the projection
    along z of the particle weighted by exp(-2 pi i q z / D), zero-padded to D pixels
    (so a truth pixel is 1 / D of the detector pixel's reciprocal). Frame F // 2 is the
    plain projection, the data set's ground truth.
    """
    import torch

    d = config.diffraction_size
    volume = sample_volumes(config.generator, seed, [index])[0]
    n = volume.shape[-3]
    z = torch.arange(n, dtype=torch.float64) - n // 2
    q = torch.arange(config.frames, dtype=torch.float64) - config.frames // 2
    ramps = torch.exp(-2j * np.pi * torch.outer(q, z) / d).to(volume.dtype)
    return torch.einsum("qz,zyx->qyx", ramps, volume).numpy().astype(np.complex64)


def write_truth(
    root: str | Path, truth: dict[int, dict], config: SyntheticBeamtimeConfig
) -> list[Path]:
    """Write each scan's truth as ``root/truth/<name>.npz``; return the paths.

    ``truth`` is what ``cdiflow.formats.aps34idc_writer.write_synthetic_beamtime``
    returns for ``root`` (per scan number: ``name``, ``particle_seed``,
    ``particle_index``, ``central_frame``). Each file holds ``amplitude`` and ``phase``
    (radians), both (F, N, N) float32, one object per rocking frame (``rocking_truth``),
    ``fourier_pixels`` (D: the truth's pixel is the real-space pixel of a D-pixel
    detector crop) and ``central_frame``.
    """
    folder = Path(root) / TRUTH_DIR
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for info in truth.values():
        obj = rocking_truth(config, int(info["particle_seed"]), int(info["particle_index"]))
        path = folder / f"{info['name']}.npz"
        np.savez(
            path,
            amplitude=np.abs(obj).astype(np.float32),
            phase=np.angle(obj).astype(np.float32),
            fourier_pixels=np.int64(config.diffraction_size),
            central_frame=np.int64(info["central_frame"]),
        )
        paths.append(path)
    return paths


def truth_file(source: str) -> Path | None:
    """The truth file of the scan read from ``source``, or None when there is none.

    The rule: ``truth/<name>.npz`` in the source's folder or the folder above it, where
    ``<name>`` is the source's file or folder name (for ``file.h5:/dataset``, the
    file's). A 34-ID-C scan ``BEAMTIME/<detector>/<scan>`` finds
    ``BEAMTIME/truth/<scan>.npz`` (``write_truth``); a scan file ``FOLDER/x.h5`` finds
    ``FOLDER/truth/x.h5.npz``.
    """
    path = Path(str(source))
    candidates = [path] if ":" not in str(source) else [path, Path(str(source).split(":")[0])]
    for where in candidates:
        for folder in (where.parent, where.parent.parent):
            found = folder / TRUTH_DIR / f"{where.name}.npz"
            if where.name and found.is_file():
                return found
    return None


@dataclasses.dataclass(frozen=True)
class ForwardCDIConfig(Config):
    """A single forward-CDI frame: an object with fine structure, a beamstop, gaps.

    The object: an elliptical disc (semi-axes ``radius`` and 0.8 ``radius`` pixels)
    whose amplitude is striped (``stripe_low`` .. 1, period ``stripe_period`` pixels:
    structure a 4x coarser pixel cannot hold), edges smoothed by a Gaussian of
    ``edge_sigma``, with a smooth phase bump of ``phase`` rad and a small ramp. The
    frame is |F|^2 of it in ``frame_size`` pixels, scaled to ``peak_counts`` at the
    maximum (Poisson counts when ``poisson``), with the pixels within
    ``beamstop_radius`` of the centre and two detector gaps (``gap_rows``,
    ``gap_cols``) set to zero counts, as the detector leaves them.
    """

    frame_size: int = 256
    object_size: int = 96
    radius: float = 38.0
    stripe_period: float = 7.0
    stripe_low: float = 0.3
    edge_sigma: float = 0.7
    phase: float = 1.2
    peak_counts: float = 1.0e8
    poisson: bool = False
    beamstop_radius: float = 1.5
    gap_rows: tuple[int, int] = (150, 153)
    gap_cols: tuple[int, int] = (100, 102)

    def validate(self) -> None:
        require(self.object_size * 2 <= self.frame_size, "the object must fit half the frame")
        require(0 < self.radius < self.object_size / 2, "radius must fit the object box")
        require(self.peak_counts > 0 and self.beamstop_radius >= 0, "bad counts or beamstop")


def forward_cdi_object(config: ForwardCDIConfig) -> np.ndarray:
    """(object_size, object_size) complex128, centred: the object of ``ForwardCDIConfig``."""
    from scipy.ndimage import gaussian_filter

    n = config.object_size
    yy, xx = np.mgrid[0:n, 0:n] - n // 2
    r = config.radius
    amp = ((yy / r) ** 2 + (xx / (0.8 * r)) ** 2 <= 1).astype(float)
    stripes = np.sin(2 * np.pi * (xx + 0.5 * yy) / config.stripe_period) > 0
    amp = gaussian_filter(
        amp * (config.stripe_low + (1 - config.stripe_low) * stripes), config.edge_sigma
    )
    phase = config.phase * np.exp(-((yy - 10) ** 2 + (xx + 8) ** 2) / 600.0) + 0.01 * xx
    return amp * np.exp(1j * phase)


def forward_cdi_frame(
    config: ForwardCDIConfig, rng: np.random.Generator | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A forward-CDI frame, its truth and where the detector saw nothing.

    Returns
    -------
    frame : (S, S) float32 counts, centred (k = 0 at S // 2); zero in the beamstop and
        the gaps.
    truth : (object_size, object_size) complex128 object (``forward_cdi_object``).
    blind : (S, S) bool, True in the beamstop and the gaps.
    """
    import torch

    truth = forward_cdi_object(config)
    s = config.frame_size
    field = pad_centre(torch.from_numpy(truth), s)
    intensity = (centred_fft2(field).abs() ** 2).numpy()
    intensity *= config.peak_counts / intensity.max()
    if config.poisson:
        if rng is None:
            raise ValueError("poisson counts need an rng")
        intensity = rng.poisson(intensity).astype(np.float64)
    yy, xx = np.mgrid[0:s, 0:s] - s // 2
    blind = yy**2 + xx**2 <= config.beamstop_radius**2
    blind[slice(*config.gap_rows), :] = True
    blind[:, slice(*config.gap_cols)] = True
    return np.where(blind, 0.0, intensity).astype(np.float32), truth, blind
