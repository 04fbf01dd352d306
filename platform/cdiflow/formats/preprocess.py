"""From a measured rocking scan to the 64 x 64 modulus the CNN and the phasing engine take.

Steps (pure functions; ``preprocess`` chains them):

1. check the counts (finite, non-negative, no all-zero frame, enough frames);
2. take the frame through the peak of the rocking curve (the central slice);
3. mask bad pixels: calibration-bad, dead, hot, saturated; a saturated Bragg peak is a
   failure (its modulus is unknown, so no reconstruction is trustworthy);
4. centre on the Bragg peak, crop ``crop`` x ``crop`` and bin ``bin`` x ``bin``
   (default 128 and 2 -> 64 x 64, the peak at index 32 = P // 2, centred convention);
5. estimate the oversampling per axis from the autocorrelation support: the
   autocorrelation |centred_ifft2(I)| of an object of extent w spans 2w - 1 pixels, so
   w = (support + 1) / 2 and oversampling = P / w;
6. modulus = sqrt(I) normalised to a maximum of 1 with
   ``cdiflow.physics.fft.normalise_modulus``, exactly as the generator stores patterns.

Masks are True where a pixel is *measured*; masked pixels carry 0 in the modulus and
are free during phasing.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cdiflow.config import Config, require
from cdiflow.formats.scan import SaturatedPeak, Scan, ScanDataError, check_no_empty_frames


@dataclasses.dataclass(frozen=True)
class PreprocessConfig(Config):
    """How a scan becomes a pattern (logged with every reconstruction)."""

    crop: int = 128  # detector pixels per axis around the Bragg peak
    bin: int = 2  # binning factor per axis; output size = crop // bin
    frame: int | None = None  # force the central frame; None = peak of the rocking curve
    min_frames: int = 1  # fewer frames -> failure (1 admits single 2D patterns)
    # Raw counts at or above this level are saturated. None = detect clipping from the
    # data: the central frame's raw maximum counts as a saturation level when it is a
    # full counter (2^N - 1, N >= 8) or when it is shared by >= saturation_plateau pixels.
    saturation_level: float | None = None
    saturation_plateau: int = 3
    peak_guard: int = 2  # saturated pixels within this many pixels of the peak -> failure
    hot_ratio: float = 20.0  # hot: above hot_ratio x the brightest of its 8 neighbours ...
    hot_min_counts: float = 50.0  # ... and above this many counts (Bragg speckle is smooth)
    dead_neighbour_counts: float = 100.0  # dead: zero in all frames, 3x3 median sums >= this
    # Autocorrelation support: fraction of its maximum. 0.01 gives 0.87 +- 0.05 of the
    # true extent on generator particles (Poisson, 1e5 peak counts); lower picks up noise.
    support_threshold: float = 0.01
    # Centre on the brightest pixel ("max") or on the intensity centre of mass around it
    # ("com"), which tracks k = 0 better for strong-phase particles.
    centre: str = "max"
    min_peak_counts: float = 10.0  # a central frame whose peak is below this is empty

    def validate(self) -> None:
        require(self.bin >= 1, f"bin must be >= 1, got {self.bin}")
        require(
            self.crop >= 8 and self.crop % self.bin == 0, "crop must be >= 8 and a multiple of bin"
        )
        require(self.frame is None or self.frame >= 0, "frame must be >= 0")
        require(self.min_frames >= 1, "min_frames must be >= 1")
        require(self.saturation_level is None or self.saturation_level > 0, "saturation_level > 0")
        require(self.saturation_plateau >= 2, "saturation_plateau must be >= 2")
        require(self.peak_guard >= 0, "peak_guard must be >= 0")
        require(self.hot_ratio > 1, "hot_ratio must be > 1")
        require(0 < self.support_threshold < 1, "support_threshold must be in (0, 1)")
        require(
            self.centre in ("max", "com"), f"centre must be 'max' or 'com', not {self.centre!r}"
        )

    @property
    def size(self) -> int:
        """Output pattern size per axis."""
        return self.crop // self.bin


@dataclasses.dataclass(frozen=True, eq=False)
class Preprocessed:
    """A preprocessed scan: the pattern, its mask and how they were made.

    Attributes
    ----------
    modulus : (P, P) float32, sqrt of binned intensity, max 1, 0 where masked; centred.
    mask : (P, P) bool, True where measured.
    parameters : JSON-ready provenance: frame index, peak (row, col) on the frames,
        crop/bin, oversampling and object extent (y, x), counts, masked-pixel counts.
    """

    name: str
    source: str
    modulus: np.ndarray
    mask: np.ndarray
    parameters: dict[str, Any]


def central_frame_index(frames: np.ndarray, weights: np.ndarray | None = None) -> int:
    """Index of the frame at the peak of the rocking curve (total counts per frame)."""
    w = np.ones(frames.shape[1:], np.float32) if weights is None else weights
    curve = np.einsum("fhw,hw->f", frames, w.astype(frames.dtype, copy=False))
    return int(np.argmax(curve))


def saturation_mask(raw_frame: np.ndarray, config: PreprocessConfig) -> tuple[np.ndarray, float]:
    """(H, W) bool of saturated pixels in a raw frame, and the level used (inf: none)."""
    level = config.saturation_level
    if level is None:
        top = float(raw_frame.max())
        full_counter = top >= 255 and float(np.log2(top + 1)).is_integer()
        plateau = int((raw_frame == top).sum()) >= config.saturation_plateau and top > 0
        level = top if (full_counter or plateau) else float("inf")
    return raw_frame >= level, float(level)


def hot_pixel_mask(frame: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """(H, W) bool: isolated pixels far above all 8 neighbours (not physical speckle)."""
    from scipy.ndimage import maximum_filter

    footprint = np.ones((3, 3), bool)
    footprint[1, 1] = False
    neighbours = maximum_filter(frame, footprint=footprint, mode="constant", cval=0.0)
    return (frame > config.hot_min_counts) & (frame > config.hot_ratio * neighbours)


def dead_pixel_mask(frames: np.ndarray, config: PreprocessConfig) -> np.ndarray:
    """(H, W) bool: zero in every frame while its 3x3 neighbourhood collects real counts.

    The median (not the maximum) keeps the edge of a signal region from counting as
    dead. A 3x3 median is >= t exactly when at least 5 of the 9 values are >= t, which a
    box filter of the thresholded sums counts far faster than a median filter.
    """
    from scipy.ndimage import uniform_filter

    total = frames.sum(axis=0)
    bright = (total >= config.dead_neighbour_counts).astype(np.float32)
    return (total == 0) & (uniform_filter(bright, size=3, mode="nearest") * 9 > 4.5)


def centre_of_mass(
    frame: np.ndarray, measured: np.ndarray, start: tuple[int, int], half: int
) -> tuple[int, int]:
    """Rounded intensity centre of mass in a (2 half + 1)^2 window, re-centred twice."""
    h, w = frame.shape
    r, c = start
    for _ in range(2):
        rs, cs = max(r - half, 0), max(c - half, 0)
        window = (frame * measured)[rs : r + half + 1, cs : c + half + 1]
        total = window.sum()
        if total <= 0:
            break
        rows, cols = np.indices(window.shape)
        r = min(max(int(round(rs + (rows * window).sum() / total)), 0), h - 1)
        c = min(max(int(round(cs + (cols * window).sum() / total)), 0), w - 1)
    return (r, c)


def crop_and_bin(
    frame: np.ndarray, measured: np.ndarray, peak: tuple[int, int], crop: int, bin_: int
) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``crop`` x ``crop`` on ``peak`` (peak -> index crop // 2), then bin.

    Outside the frame counts as unmeasured. A bin's intensity is the sum over its
    measured pixels scaled by (pixels per bin / measured pixels), so partly masked bins
    keep the scale; a bin with no measured pixel is masked.

    Returns
    -------
    intensity (crop // bin, crop // bin) float64, mask of the same shape (True = measured).
    """
    h, w = frame.shape
    r0, c0 = peak[0] - crop // 2, peak[1] - crop // 2
    window = np.zeros((crop, crop))
    seen = np.zeros((crop, crop), bool)
    rs, re_ = max(r0, 0), min(r0 + crop, h)
    cs, ce = max(c0, 0), min(c0 + crop, w)
    window[rs - r0 : re_ - r0, cs - c0 : ce - c0] = frame[rs:re_, cs:ce]
    seen[rs - r0 : re_ - r0, cs - c0 : ce - c0] = measured[rs:re_, cs:ce]
    n = crop // bin_
    sums = (window * seen).reshape(n, bin_, n, bin_).sum(axis=(1, 3))
    counts = seen.reshape(n, bin_, n, bin_).sum(axis=(1, 3))
    intensity = np.where(counts > 0, sums * (bin_ * bin_) / np.maximum(counts, 1), 0.0)
    return intensity, counts > 0


def estimate_oversampling(
    intensity: np.ndarray, mask: np.ndarray, threshold: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Oversampling per axis (y, x) from the support of the autocorrelation.

    The autocorrelation is |centred_ifft2(I)| (masked pixels set to 0). Its support is
    the connected region around the centre above ``threshold`` x its maximum; for an
    object of extent w it spans 2w - 1 pixels, so w = (span + 1) / 2 and the
    oversampling is P / w.

    Returns
    -------
    (oversampling_y, oversampling_x), (extent_y, extent_x) in pattern pixels.
    """
    import torch
    from scipy.ndimage import label

    from cdiflow.physics.fft import centred_ifft2

    p = intensity.shape[-1]
    auto = centred_ifft2(torch.from_numpy(np.where(mask, intensity, 0.0))).abs().numpy()
    regions, _ = label(auto >= threshold * auto.max())
    centre = regions == regions[p // 2, p // 2]
    rows, cols = np.flatnonzero(centre.any(axis=1)), np.flatnonzero(centre.any(axis=0))
    extent = ((rows[-1] - rows[0] + 2) / 2.0, (cols[-1] - cols[0] + 2) / 2.0)
    return (p / extent[0], p / extent[1]), (float(extent[0]), float(extent[1]))


def _check_counts(scan: Scan, config: PreprocessConfig) -> None:
    frames = scan.frames
    if frames.ndim != 3 or frames.shape[1] < config.crop // 4 or frames.shape[2] < config.crop // 4:
        raise ScanDataError(
            scan.source,
            f"frames of shape {frames.shape} cannot give a {config.crop} crop",
            kind="wrong_shape",
        )
    if frames.shape[0] < config.min_frames:
        raise ScanDataError(
            scan.source,
            f"{frames.shape[0]} frame(s), need at least {config.min_frames}",
            kind="too_few_frames",
        )
    # Per-frame float32 sums: one pass (a float64 sum converts and is ~7x slower); NaN
    # and inf propagate into the sums.
    if not np.isfinite(frames.reshape(frames.shape[0], -1).sum(axis=1)).all():
        raise ScanDataError(scan.source, "NaN/inf in the corrected frames", kind="nan_counts")
    if frames.min() < 0:
        raise ScanDataError(scan.source, "negative corrected counts", kind="negative_counts")
    check_no_empty_frames(scan.counts, scan.source)


def preprocess(scan: Scan, config: PreprocessConfig | None = None) -> Preprocessed:
    """Turn a scan into a centred, masked, normalised (P, P) modulus (module docstring).

    Raises
    ------
    ScanDataError
        Bad counts, wrong shapes, too few frames, an empty central frame.
    SaturatedPeak
        Saturated pixels within ``peak_guard`` of the Bragg peak.
    """
    import torch

    from cdiflow.physics.fft import normalise_modulus

    config = config or PreprocessConfig()
    _check_counts(scan, config)
    frames = scan.frames
    calibration_bad = (
        scan.bad_pixels if scan.bad_pixels is not None else np.zeros(frames.shape[1:], bool)
    )
    dead = dead_pixel_mask(frames, config)
    k = central_frame_index(frames, ~(calibration_bad | dead))
    if config.frame is not None:
        if config.frame >= frames.shape[0]:
            raise ScanDataError(
                scan.source, f"frame {config.frame} of {frames.shape[0]}", kind="too_few_frames"
            )
        k = config.frame
    frame = frames[k].astype(np.float64)
    hot = hot_pixel_mask(frame, config)
    saturated, level = saturation_mask(scan.counts[k], config)
    unusable = calibration_bad | dead | hot
    peak = np.unravel_index(int(np.argmax(np.where(unusable, 0.0, frame))), frame.shape)
    peak = (int(peak[0]), int(peak[1]))
    if frame[peak] < config.min_peak_counts:
        raise ScanDataError(
            scan.source,
            f"central frame {k} peaks at {frame[peak]:.3g} counts, below min_peak_counts",
            kind="all_zero",
        )
    g = config.peak_guard
    near = saturated[max(peak[0] - g, 0) : peak[0] + g + 1, max(peak[1] - g, 0) : peak[1] + g + 1]
    if near.any():
        raise SaturatedPeak(
            scan.source,
            f"Bragg peak saturated: {int(near.sum())} pixel(s) at "
            f">= {level:.6g} raw counts near {peak} in frame {k}",
        )
    measured = ~(unusable | saturated)
    centre = peak
    if config.centre == "com":
        centre = centre_of_mass(frame, measured, peak, config.crop // 4)
    intensity, mask = crop_and_bin(frame, measured, centre, config.crop, config.bin)
    oversampling, extent = estimate_oversampling(intensity, mask, config.support_threshold)
    modulus = normalise_modulus(torch.from_numpy(np.sqrt(intensity))).numpy()
    parameters = {
        "frame_index": k,
        "frames": int(frames.shape[0]),
        "frame_shape": [int(s) for s in frames.shape[1:]],
        "peak": list(peak),
        "peak_counts": float(frame[peak]),
        "centre": list(centre),
        "crop": config.crop,
        "bin": config.bin,
        "oversampling": [round(float(o), 4) for o in oversampling],
        "object_extent": list(extent),
        # True where the support reaches the pattern edge: the autocorrelation wraps, so
        # the object is at least P/2 wide and the oversampling at most about 2.
        "oversampling_capped": [bool(e >= (config.size + 1) / 2) for e in extent],
        "frame_counts": float(frame[measured].sum()),
        "pattern_counts": float(intensity[mask].sum()),
        "masked": {
            "calibration": int(calibration_bad.sum()),
            "dead": int(dead.sum()),
            "hot": int(hot.sum()),
            "saturated": int(saturated.sum()),
            "pattern_pixels": int((~mask).sum()),
        },
        "saturation_level": None if np.isinf(level) else level,
        "config": config.to_dict(),
    }
    return Preprocessed(
        name=scan.name,
        source=scan.source,
        modulus=modulus.astype(np.float32),
        mask=mask,
        parameters=parameters,
    )
