"""From a measured scan to the patterns the CNN and the phasing engine take.

Steps (pure functions; ``preprocess`` chains them):

1. check the counts (finite, non-negative, no all-zero frame, enough frames);
2. take the frame through the peak of the rocking curve (the central slice; a single
   2D pattern is its own central frame);
3. mask bad pixels: the file's mask and ``--mask`` (``cdiflow.formats.masks``),
   calibration-bad, dead, hot, saturated; a saturated Bragg peak is a failure (its
   modulus is unknown, so no reconstruction is trustworthy);
4. find the centre: the pattern's centre of symmetry, sub-pixel
   (``cdiflow.beamtime.centring.find_centre``), not the brightest pixel;
5. mark unmeasured what the detector did not see: the connected zero-count region at
   the centre (a beamstop) and rows / columns without counts (detector gaps);
6. estimate the oversampling at native resolution from the autocorrelation support:
   the autocorrelation |centred_ifft2(I)| of an object of extent w spans 2w - 1
   pixels, so w = (support + 1) / 2 and oversampling = P / w;
7. cut two windows around the centre (``centring.choose_binning``): the CNN's 64 x 64,
   binned by the largest factor that keeps the oversampling >= ``min_oversampling``
   inside the frame, and the refinement's (``refine_size``: 64 = the CNN's, 128 / 256
   / 512 by the same rule, or native: bin 1, the largest window the frame holds); the
   centre lands on index P // 2 (centred convention);
8. modulus = sqrt(I) normalised to a maximum of 1 with
   ``cdiflow.physics.fft.normalise_modulus``, exactly as the generator stores patterns.

Masks are True where a pixel is *measured*; masked pixels carry 0 in the modulus and
are free during phasing. ``crop_and_bin``, ``estimate_oversampling``, ``centre_of_mass``
(``centring``) and the pixel masks (``masks``) are re-exported here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from cdiflow import PATTERN_SIZE
from cdiflow.beamtime.centring import (  # noqa: F401 - re-exported
    Window,
    centre_of_mass,
    crop_and_bin,
    cut_pattern,
    cut_window,
    estimate_oversampling,
    find_centre,
    plan_windows,
)
from cdiflow.config import Config, require
from cdiflow.formats.masks import (  # noqa: F401 - re-exported
    beamstop_mask,
    check_mask_shape,
    dead_pixel_mask,
    gap_mask,
    hot_pixel_mask,
    read_mask_file,
    saturation_mask,
)
from cdiflow.formats.scan import SaturatedPeak, Scan, ScanDataError, check_no_empty_frames

REFINE_SIZES = ("64", "128", "256", "512", "native")


@dataclasses.dataclass(frozen=True)
class PreprocessConfig(Config):
    """How a scan becomes a pattern (logged with every reconstruction)."""

    # CNN pattern: ``crop`` detector pixels per axis around the centre, binned ``bin``
    # x ``bin`` (crop // bin = 64). 0 (default): chosen from the measured oversampling
    # (``cdiflow.beamtime.centring.choose_binning``): the largest bin that keeps at least
    # ``min_oversampling`` per axis with the window inside the frame. bin > 0, crop 0:
    # crop = 64 x bin.
    crop: int = 0
    bin: int = 0
    # The estimate's object extent is 0.87 +- 0.05 of the true one (support_threshold),
    # so an estimated 2.3 is a true oversampling of about 2: the CNN's geometry.
    min_oversampling: float = 2.3
    # A window that the frame holds is shifted into it (rather than padded with
    # unmeasured pixels) when that moves the centre by at most this many pattern
    # pixels: a 64 x 64 frame of a strong-phase particle, whose intensity centroid sits
    # up to ~5 pixels off k = 0, is used whole.
    max_shift: int = 8
    # Refinement pattern: "64" (the CNN's pattern, as before), "128", "256", "512"
    # (that many pixels, binned by the same rule) or "native" (bin 1, the largest
    # window around the centre that the frame holds).
    refine_size: str = "64"
    mask_file: str = ""  # --mask: NPY / TIFF / HDF5, nonzero = bad pixel, for every scan
    beamstop: bool = True  # the zero-count region at the centre is unmeasured
    gaps: bool = True  # rows / columns without counts between counted ones are unmeasured
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
    # With a beamstop, the filled-in centre (``centring.fill_unmeasured``) misses part
    # of the central speckle, which puts a broad blob of a few % of the maximum into the
    # autocorrelation; this threshold keeps it out (a 256 x 256 forward-CDI pattern with
    # a 9-pixel beamstop and gaps: extent 70 x 58 at 0.05 against 67 x 54 unmasked at
    # 0.05, 120 x 99 at 0.01).
    beamstop_support_threshold: float = 0.05
    # Centre on the pattern's centre of symmetry ("symmetry", sub-pixel: the maximum
    # of its autoconvolution), the intensity centre of mass around the brightest pixel
    # ("com"), or the brightest pixel alone ("max", the old rule).
    centre: str = "symmetry"
    min_peak_counts: float = 10.0  # a central frame whose peak is below this is empty

    def validate(self) -> None:
        require(self.bin >= 0, f"bin must be >= 0 (0: automatic), got {self.bin}")
        require(self.crop >= 0, f"crop must be >= 0 (0: automatic), got {self.crop}")
        require(
            self.crop == 0 or (self.crop >= 8 and self.crop % self.cnn_bin == 0),
            "crop must be >= 8 and a multiple of bin (bin 0 with a crop: crop / 64)",
        )
        require(self.min_oversampling >= 1, "min_oversampling must be >= 1")
        require(self.max_shift >= 0, "max_shift must be >= 0")
        require(
            self.refine_size in REFINE_SIZES,
            f"refine_size must be one of {REFINE_SIZES}, got {self.refine_size!r}",
        )
        require(self.frame is None or self.frame >= 0, "frame must be >= 0")
        require(self.min_frames >= 1, "min_frames must be >= 1")
        require(self.saturation_level is None or self.saturation_level > 0, "saturation_level > 0")
        require(self.saturation_plateau >= 2, "saturation_plateau must be >= 2")
        require(self.peak_guard >= 0, "peak_guard must be >= 0")
        require(self.hot_ratio > 1, "hot_ratio must be > 1")
        require(0 < self.support_threshold < 1, "support_threshold must be in (0, 1)")
        require(0 < self.beamstop_support_threshold < 1, "beamstop_support_threshold in (0, 1)")
        require(self.centre in CENTRES, f"centre must be one of {CENTRES}, not {self.centre!r}")

    @property
    def cnn_bin(self) -> int:
        """The fixed CNN binning (0: automatic); a crop without a bin bins to 64."""
        if self.bin or not self.crop:
            return self.bin
        return max(self.crop // PATTERN_SIZE, 1)

    @property
    def size(self) -> int:
        """CNN pattern size per axis (64 unless crop and bin say otherwise)."""
        if self.crop:
            return self.crop // self.cnn_bin
        return PATTERN_SIZE


CENTRES = ("symmetry", "com", "max")


@dataclasses.dataclass(frozen=True, eq=False)
class Preprocessed:
    """A preprocessed scan: the CNN's pattern, the refinement's, their masks and how
    they were made.

    Attributes
    ----------
    modulus : (64, 64) float32, sqrt of binned intensity, max 1, 0 where masked; centred:
        what the CNN sees.
    mask : (64, 64) bool, True where measured.
    refine_modulus, refine_mask : (R, R), the same for the refinement pattern
        (``PreprocessConfig.refine_size``; the CNN's own arrays when it is "64").
    parameters : JSON-ready provenance: frame index, peak and centre (row, col) on the
        frames, the CNN window (crop, bin, origin) and the refinement's (``refine``),
        oversampling and object extent (y, x), counts, masked pixels and where the
        masks came from.
    """

    name: str
    source: str
    modulus: np.ndarray
    mask: np.ndarray
    parameters: dict[str, Any]
    refine_modulus: np.ndarray | None = None
    refine_mask: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.refine_modulus is None:
            object.__setattr__(self, "refine_modulus", self.modulus)
            object.__setattr__(self, "refine_mask", self.mask)


def central_frame_index(frames: np.ndarray, weights: np.ndarray | None = None) -> int:
    """Index of the frame at the peak of the rocking curve (total counts per frame)."""
    w = np.ones(frames.shape[1:], np.float32) if weights is None else weights
    curve = np.einsum("fhw,hw->f", frames, w.astype(frames.dtype, copy=False))
    return int(np.argmax(curve))


def _check_counts(scan: Scan, config: PreprocessConfig) -> None:
    frames = scan.frames
    least = config.crop // 4 if config.crop else PATTERN_SIZE // 4
    if frames.ndim != 3 or frames.shape[1] < least or frames.shape[2] < least:
        what = f"a {config.crop} crop" if config.crop else f"a {PATTERN_SIZE}-pixel pattern"
        raise ScanDataError(
            scan.source, f"frames of shape {frames.shape} cannot give {what}", kind="wrong_shape"
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
    """Turn a scan into centred, masked, normalised patterns (module docstring).

    Raises
    ------
    ScanDataError
        Bad counts, wrong shapes, too few frames, an empty central frame, a ``--mask``
        of another shape than the frames (``MaskError``).
    SaturatedPeak
        Saturated pixels within ``peak_guard`` of the Bragg peak.
    """
    config = config or PreprocessConfig()
    _check_counts(scan, config)
    k, frame, measured, masked = _central_frame_and_masks(scan, config)
    centre = _centre(frame, measured, config)
    total = scan.frames.sum(axis=0) if scan.frames.shape[0] > 1 else frame
    unmeasured = _unmeasured_regions(total, centre, config)
    measured &= ~unmeasured["beamstop"] & ~unmeasured["gaps"]
    masked.update({name: int(m.sum()) for name, m in unmeasured.items()})
    threshold = config.support_threshold
    if unmeasured["beamstop"].any():
        threshold = max(threshold, config.beamstop_support_threshold)
    windows, native = plan_windows(frame, measured, centre, config, threshold)
    cnn, refine = (cut_pattern(frame, measured, w, threshold) for w in windows)
    for pattern, window in zip((cnn, refine), windows, strict=True):
        pattern["parameters"]["centre_offset"] = window.centre_offset(centre)
    parameters = {
        "frame_index": k,
        "frames": int(scan.frames.shape[0]),
        "frame_shape": [int(s) for s in scan.frames.shape[1:]],
        "centre": [round(c, 3) for c in centre],
        "centre_rule": config.centre,
        "native_oversampling": [round(float(o), 4) for o in native],
        **masked.pop("peak_info"),
        **cnn["parameters"],
        "refine": dict(refine["parameters"], scale=windows[1].crop / windows[0].crop),
        "frame_counts": float(frame[measured].sum()),
        "masked": dict(masked, pattern_pixels=int((~cnn["mask"]).sum())),
        "masked_fraction": round(float((~refine["mask"]).mean()), 6),
        "mask_source": _mask_sources(scan, config, masked),
        "config": config.to_dict(),
    }
    return Preprocessed(
        name=scan.name,
        source=scan.source,
        modulus=cnn["modulus"],
        mask=cnn["mask"],
        parameters=parameters,
        refine_modulus=refine["modulus"],
        refine_mask=refine["mask"],
    )


def _central_frame_and_masks(scan: Scan, config: PreprocessConfig):
    """The central frame (float64), its measured mask (before the beamstop and gaps)
    and the counts of each kind of masked pixel; raises for an empty or saturated peak."""
    frames = scan.frames
    shape = frames.shape[1:]
    calibration_bad = scan.bad_pixels if scan.bad_pixels is not None else np.zeros(shape, bool)
    user = np.zeros(shape, bool)
    if config.mask_file:
        user = read_mask_file(config.mask_file)
        check_mask_shape(user, shape, config.mask_file)
    dead = dead_pixel_mask(frames, config)
    k = central_frame_index(frames, ~(calibration_bad | dead | user))
    if config.frame is not None:
        if config.frame >= frames.shape[0]:
            raise ScanDataError(
                scan.source, f"frame {config.frame} of {frames.shape[0]}", kind="too_few_frames"
            )
        k = config.frame
    frame = frames[k].astype(np.float64)
    hot = hot_pixel_mask(frame, config)
    saturated, level = saturation_mask(scan.counts[k], config)
    unusable = calibration_bad | dead | hot | user
    peak = _brightest(frame, unusable, scan.source, k, config)
    g = config.peak_guard
    near = saturated[max(peak[0] - g, 0) : peak[0] + g + 1, max(peak[1] - g, 0) : peak[1] + g + 1]
    if near.any():
        raise SaturatedPeak(
            scan.source,
            f"Bragg peak saturated: {int(near.sum())} pixel(s) at "
            f">= {level:.6g} raw counts near {peak} in frame {k}",
        )
    masked = {
        "calibration": int(calibration_bad.sum()),
        "user": int(user.sum()),
        "dead": int(dead.sum()),
        "hot": int(hot.sum()),
        "saturated": int(saturated.sum()),
        "peak_info": {
            "peak": list(peak),
            "peak_counts": float(frame[peak]),
            "saturation_level": None if np.isinf(level) else level,
        },
    }
    return k, frame, ~(unusable | saturated), masked


def _brightest(frame, unusable, source, k, config) -> tuple[int, int]:
    peak = np.unravel_index(int(np.argmax(np.where(unusable, 0.0, frame))), frame.shape)
    peak = (int(peak[0]), int(peak[1]))
    if frame[peak] < config.min_peak_counts:
        raise ScanDataError(
            source,
            f"central frame {k} peaks at {frame[peak]:.3g} counts, below min_peak_counts",
            kind="all_zero",
        )
    return peak


def _centre(frame, measured, config: PreprocessConfig) -> tuple[float, float]:
    peak = np.unravel_index(int(np.argmax(np.where(measured, frame, 0.0))), frame.shape)
    peak = (int(peak[0]), int(peak[1]))
    if config.centre == "max":
        return (float(peak[0]), float(peak[1]))
    if config.centre == "com":
        half = (config.crop or PATTERN_SIZE * 2) // 4
        r, c = centre_of_mass(frame, measured, peak, half)
        return (float(r), float(c))
    return find_centre(frame, measured)


def _unmeasured_regions(total, centre, config: PreprocessConfig) -> dict[str, np.ndarray]:
    none = np.zeros(total.shape, bool)
    return {
        "beamstop": beamstop_mask(total, centre) if config.beamstop else none,
        "gaps": gap_mask(total) if config.gaps else none,
    }


def _mask_sources(scan: Scan, config: PreprocessConfig, masked: dict) -> list[str]:
    """Where the unmeasured pixels came from, for the provenance."""
    sources = []
    if scan.metadata.get("mask_source"):
        sources.append(f"file:{scan.metadata['mask_source']}")
    if config.mask_file:
        sources.append("--mask")
    sources += [name for name in ("beamstop", "gaps") if masked.get(name)]
    return sources
