"""Where a pattern's centre is, and which window and binning keep what the data hold.

Centre (``find_centre``): a far-field pattern of a real object is centrosymmetric,
I(c + q) = I(c - q) (Friedel's law), so its centre c is where the pattern best matches
its own point inversion: the maximum of the autoconvolution
``C(s) = sum_x A(x) A(s - x)`` sits at s = 2c (A = sqrt of the measured counts, 0 where
unmeasured; one FFT pair, zero-padded so nothing wraps). A parabola through the peak
and its neighbours gives c to a fraction of a pixel. For a complex (strained) object
the slice is not exactly centrosymmetric; the autoconvolution then peaks at about twice
the intensity centroid, which is still the centre of the pattern's mass (never the
brightest speckle alone).

Window and binning (``choose_binning``): binning by b divides the oversampling by b.
From the oversampling measured at native resolution (``estimate_oversampling`` on the
largest window around the centre that the frame holds) the binning is the largest b
that keeps at least ``min_oversampling`` per axis and whose window (size x b native
pixels) lies inside the frame, so no unmeasured pixel is padded in when the frame is
large enough. A window may be shifted by up to ``max_shift`` binned pixels to stay
inside the frame (a 64 x 64 frame centred at 32.4 is used whole at 64 x 64).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from cdiflow import PATTERN_SIZE


@dataclasses.dataclass(frozen=True)
class Window:
    """A square window of the frame and its binning: ``size`` x ``size`` output pixels.

    ``origin`` (row, col) is the window's top-left native pixel (may be negative or
    reach past the frame: those pixels are unmeasured); it covers ``size * bin``
    native pixels per axis.
    """

    origin: tuple[int, int]
    size: int
    bin: int

    @property
    def crop(self) -> int:
        """Native pixels per axis that the window covers."""
        return self.size * self.bin

    def centre_in_window(self, centre: tuple[float, float]) -> tuple[float, float]:
        """Where ``centre`` (native pixels) lands in the binned window (index units).

        The centred convention wants ``size // 2``; the difference is the residual
        offset recorded in the provenance.
        """
        b = self.bin
        pairs = zip(centre, self.origin, strict=True)
        return tuple(float((c - o - (b - 1) / 2) / b) for c, o in pairs)

    def centre_offset(self, centre: tuple[float, float]) -> list[float]:
        """Binned pixels from ``centre`` to index ``size // 2`` (y, x): the residual."""
        return [round(h - self.size // 2, 3) for h in self.centre_in_window(centre)]


def find_centre(
    frame: np.ndarray, measured: np.ndarray, start: tuple[int, int] | None = None
) -> tuple[float, float]:
    """Centre of symmetry (row, col) of a pattern, sub-pixel (module docstring).

    Parameters
    ----------
    frame : (H, W) counts, >= 0.
    measured : (H, W) bool, True where measured (others count as 0).
    start : unused pixel hint kept for symmetry with the other rules (None).

    Returns
    -------
    (row, col) floats in native pixel coordinates.
    """
    del start
    a = np.sqrt(np.where(measured, np.maximum(frame, 0.0), 0.0))
    h, w = a.shape
    shape = (2 * h, 2 * w)
    spectrum = np.fft.rfft2(a, s=shape)
    conv = np.fft.irfft2(spectrum * spectrum, s=shape)[: 2 * h - 1, : 2 * w - 1]
    peak = np.unravel_index(int(np.argmax(conv)), conv.shape)
    return tuple(float(_parabola(conv, peak, axis) / 2.0) for axis in (0, 1))


def _parabola(values: np.ndarray, peak: tuple[int, ...], axis: int) -> float:
    """Sub-pixel position of ``peak`` along ``axis`` from a parabola through 3 points."""
    i = peak[axis]
    if i == 0 or i == values.shape[axis] - 1:
        return float(i)
    index = list(peak)
    samples = []
    for k in (i - 1, i, i + 1):
        index[axis] = k
        samples.append(float(values[tuple(index)]))
    left, mid, right = samples
    curvature = left - 2 * mid + right
    if curvature >= 0:
        return float(i)
    return float(i + 0.5 * (left - right) / curvature)


def window_at(
    centre: tuple[float, float], size: int, bin_: int, frame_shape, max_shift: int
) -> tuple[Window, bool]:
    """The window of ``size`` binned pixels centred on ``centre``, and whether it fits.

    The native pixel that holds the centre lands in binned pixel ``size // 2`` (centred
    convention): its middle pixel for an odd bin, the first of the two middle ones for
    an even bin (bin 2 puts it first, as the fixed 128 / 2 rule did). A window that
    leaves the frame by at most ``max_shift`` binned pixels is shifted inside it.
    """
    crop = size * bin_
    origin = []
    fits = True
    for c, n in zip(centre, frame_shape, strict=True):
        # the native pixel holding the centre is the middle (or first of the two
        # middle) pixels of the central bin
        o = math.floor(c + 0.5) - (size // 2) * bin_ - (bin_ - 1) // 2
        if crop <= n:
            moved = min(max(o, 0), n - crop)
            allowed = abs(moved - o) <= max_shift * bin_
            fits &= allowed
            o = moved if allowed else o
        else:
            fits = False
        origin.append(int(o))
    return Window((origin[0], origin[1]), size, bin_), fits


def native_size(centre: tuple[float, float], frame_shape, max_shift: int) -> int:
    """The largest even window (native pixels) around ``centre`` that fits the frame."""
    best = 2
    for size in range(2, min(frame_shape) + 1, 2):
        if window_at(centre, size, 1, frame_shape, max_shift)[1]:
            best = size
    return best


def choose_binning(
    centre: tuple[float, float],
    size: int,
    native_oversampling: float,
    frame_shape,
    min_oversampling: float,
    max_shift: int,
) -> Window:
    """The window of ``size`` pixels with the largest binning that keeps the
    oversampling at least ``min_oversampling`` and lies in the frame (module docstring).

    Windows centred exactly are tried first; only when none of them lies in the frame
    may a window move by up to ``max_shift`` binned pixels. When no binning fits (a
    frame smaller than ``size``), bin 1: the pixels outside the frame are unmeasured.
    """
    for shift in (0, max_shift):
        best, b = None, 1
        while b == 1 or native_oversampling / b >= min_oversampling:
            window, fits = window_at(centre, size, b, frame_shape, shift)
            if not fits:
                break
            best, b = window, b + 1
        if best is not None:
            return best
    return window_at(centre, size, 1, frame_shape, max_shift)[0]


def cut_window(
    frame: np.ndarray, measured: np.ndarray, window: Window
) -> tuple[np.ndarray, np.ndarray]:
    """Cut and bin ``window`` of a frame: intensity (size, size) float64 and its mask.

    Outside the frame counts as unmeasured. A bin's intensity is the sum over its
    measured pixels scaled by (pixels per bin / measured pixels), so partly masked bins
    keep the scale; a bin with no measured pixel is masked.
    """
    h, w = frame.shape
    crop, b, n = window.crop, window.bin, window.size
    r0, c0 = window.origin
    patch = np.zeros((crop, crop))
    seen = np.zeros((crop, crop), bool)
    rs, re_ = max(r0, 0), min(r0 + crop, h)
    cs, ce = max(c0, 0), min(c0 + crop, w)
    if rs < re_ and cs < ce:
        patch[rs - r0 : re_ - r0, cs - c0 : ce - c0] = frame[rs:re_, cs:ce]
        seen[rs - r0 : re_ - r0, cs - c0 : ce - c0] = measured[rs:re_, cs:ce]
    sums = (patch * seen).reshape(n, b, n, b).sum(axis=(1, 3))
    counts = seen.reshape(n, b, n, b).sum(axis=(1, 3))
    intensity = np.where(counts > 0, sums * (b * b) / np.maximum(counts, 1), 0.0)
    return intensity, counts > 0


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

    The old fixed rule, kept for callers that name the window by its peak pixel; the
    preprocessing itself cuts ``cdiflow.beamtime.centring.Window`` s (``cut_window``:
    same binning, outside the frame and fully masked bins unmeasured, partly masked
    bins rescaled).
    """
    origin = (peak[0] - crop // 2, peak[1] - crop // 2)
    return cut_window(frame, measured, Window(origin, crop // bin_, bin_))


def fill_unmeasured(intensity: np.ndarray, mask: np.ndarray, rounds: int = 8) -> np.ndarray:
    """A centred (P, P) pattern with its unmeasured pixels filled in, for estimates only.

    The unmeasured region at the centre (a beamstop) gets a Gaussian fitted around it
    (``_extrapolate_centre``); other unmeasured pixels (gaps) take the local mean of the
    measured pixels around them, grown ``rounds`` times (Friedel partners are not used:
    a complex object's pattern is not centrosymmetric). A zero-filled gap or beamstop
    puts lines and blobs into the autocorrelation that reach across the field.
    """
    from scipy.ndimage import uniform_filter

    mask = np.asarray(mask, bool)
    filled = np.where(mask, intensity, 0.0).astype(np.float64)
    if mask.all():
        return filled
    known = mask.copy()
    _extrapolate_centre(filled, known)
    known = known | (filled > 0)
    for _ in range(rounds):
        if known.all():
            break
        total = uniform_filter(np.where(known, filled, 0.0), size=3, mode="constant")
        count = uniform_filter(known.astype(np.float64), size=3, mode="constant")
        grow = ~known & (count > 0)
        filled[grow] = total[grow] / count[grow]
        known = known | grow
    return filled


def _extrapolate_centre(filled: np.ndarray, known: np.ndarray, ring: float = 2.0) -> None:
    """Fill the unknown pixels of the region around the centre (a beamstop) in place
    with a Gaussian, log I = a - b r^2, fitted to the known pixels within ``ring``
    pixels of the region: the central speckle of a compact object is close to one, and
    a local mean would leave most of its energy out."""
    from scipy.ndimage import binary_dilation, label

    p = filled.shape[-1]
    regions, _ = label(~known)
    hole = regions == regions[p // 2, p // 2] if not known[p // 2, p // 2] else None
    if hole is None:
        return
    near = binary_dilation(hole, iterations=int(ring)) & known & (filled > 0)
    if near.sum() < 6:
        return
    yy, xx = np.indices(filled.shape) - p // 2
    r2 = (yy * yy + xx * xx).astype(np.float64)
    design = np.stack([np.ones(int(near.sum())), r2[near]], axis=1)
    (a, b), *_ = np.linalg.lstsq(design, np.log(filled[near]), rcond=None)
    if b < 0:
        filled[hole] = np.exp(a + b * r2[hole])


def estimate_oversampling(
    intensity: np.ndarray, mask: np.ndarray, threshold: float
) -> tuple[tuple[float, float], tuple[float, float]]:
    """Oversampling per axis (y, x) from the support of the autocorrelation.

    The autocorrelation is |centred_ifft2(I)| with the unmeasured pixels filled in
    (``fill_unmeasured``). Its support is the connected region around the centre above
    ``threshold`` x its maximum; for an object of extent w it spans 2w - 1 pixels, so
    w = (span + 1) / 2 and the oversampling is P / w.

    Returns
    -------
    (oversampling_y, oversampling_x), (extent_y, extent_x) in pattern pixels.
    """
    import torch
    from scipy.ndimage import label

    # lazy: torch, like the torch import above
    from cdiflow.physics.fft import centred_ifft2

    p = intensity.shape[-1]
    filled = fill_unmeasured(intensity, mask)
    auto = centred_ifft2(torch.from_numpy(filled)).abs().numpy()
    regions, _ = label(auto >= threshold * auto.max())
    centre = regions == regions[p // 2, p // 2]
    rows, cols = np.flatnonzero(centre.any(axis=1)), np.flatnonzero(centre.any(axis=0))
    extent = ((rows[-1] - rows[0] + 2) / 2.0, (cols[-1] - cols[0] + 2) / 2.0)
    return (p / extent[0], p / extent[1]), (float(extent[0]), float(extent[1]))


def plan_windows(frame, measured, centre, config, threshold: float):
    """(CNN window, refinement window) and the native oversampling (y, x).

    ``config`` is a ``PreprocessConfig``: the CNN's 64 x 64 window at its fixed binning
    or by ``choose_binning``; the refinement's: the CNN's at "64", the largest bin-1
    window at "native", else ``choose_binning`` at that size.
    """
    shape = frame.shape
    size = native_size(centre, shape, config.max_shift)
    native_window = window_at(centre, size, 1, shape, config.max_shift)[0]
    intensity, mask = cut_window(frame, measured, native_window)
    native, _ = estimate_oversampling(intensity, mask, threshold)
    least = min(native)
    if config.cnn_bin:
        cnn = window_at(centre, config.size, config.cnn_bin, shape, config.max_shift)[0]
    else:
        cnn = choose_binning(
            centre, PATTERN_SIZE, least, shape, config.min_oversampling, config.max_shift
        )
    if config.refine_size == str(cnn.size):
        refine = cnn
    elif config.refine_size == "native":
        refine = native_window
    else:
        r = int(config.refine_size)
        refine = choose_binning(centre, r, least, shape, config.min_oversampling, config.max_shift)
    return (cnn, refine), native


def cut_pattern(frame, measured, window: Window, threshold: float) -> dict:
    """Cut, bin and normalise one window: ``modulus`` (float32, max 1), ``mask`` and
    ``parameters`` (window, oversampling and extent at ``threshold``, counts)."""
    import torch

    # lazy: torch, like the torch import above
    from cdiflow.physics.fft import normalise_modulus

    intensity, mask = cut_window(frame, measured, window)
    oversampling, extent = estimate_oversampling(intensity, mask, threshold)
    modulus = normalise_modulus(torch.from_numpy(np.sqrt(intensity))).numpy()
    parameters = {
        "crop": window.crop,
        "bin": window.bin,
        "size": window.size,
        "origin": [int(o) for o in window.origin],
        "oversampling": [round(float(o), 4) for o in oversampling],
        "object_extent": list(extent),
        # True where the support reaches the pattern edge: the autocorrelation wraps, so
        # the object is at least P/2 wide and the oversampling at most about 2.
        "oversampling_capped": [bool(e >= (window.size + 1) / 2) for e in extent],
        "pattern_counts": float(intensity[mask].sum()),
        "padded_pixels": int(_padded(window, frame.shape).sum()),
        "support_threshold": threshold,
    }
    return {"modulus": modulus.astype(np.float32), "mask": mask, "parameters": parameters}


def _padded(window: Window, frame_shape) -> np.ndarray:
    """(size, size) bool: binned pixels with no native pixel inside the frame."""
    inside = np.ones(frame_shape, bool)
    return ~cut_window(inside.astype(float), inside, window)[1]
