"""The detector model: counting noise, masks and the raw-frame response of a detector.

For the data set (off by default; beyond the paper): Poisson counting noise at a given
number of photons per pattern, a central beamstop and detector-gap stripes. For raw
beamline frames (the synthetic beamtime, ``cdiflow.physics.beamtime``): a dark frame, a
pixel gain map (the whitefield) with dead pixels, and integer counts that clip at the
counter's saturation level. A mask is True where a pixel is *measured*; masked pixels
carry 0 in the stored modulus (0 in the whitefield) and stay free during phasing.

Randomness comes in as numpy Generators; every function draws in a fixed order.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import torch

from cdiflow.config import Config, require


@dataclasses.dataclass(frozen=True)
class DetectorConfig(Config):
    """Detector effects. ``photons`` 0 means noise-free; widths 0 mean no mask."""

    photons: float = 0.0  # expected total counts per pattern; 0 = exact modulus
    beamstop_radius: float = 0.0  # pixels, disc around the pattern centre
    gap_width: int = 0  # pixels, one horizontal and one vertical stripe
    gap_offset: int = 8  # pixels from the centre to the stripes' first pixel

    def validate(self) -> None:
        require(self.photons >= 0, f"detector.photons must be >= 0, got {self.photons}")
        require(self.beamstop_radius >= 0, "detector.beamstop_radius must be >= 0")
        require(self.gap_width >= 0, "detector.gap_width must be >= 0")

    @property
    def has_mask(self) -> bool:
        return self.beamstop_radius > 0 or self.gap_width > 0


def detector_mask(config: DetectorConfig, pattern_size: int) -> np.ndarray:
    """(P, P) bool, True where measured: everything but beamstop and gap stripes."""
    p = pattern_size
    yy, xx = np.mgrid[0:p, 0:p] - p // 2
    mask = np.ones((p, p), dtype=bool)
    if config.beamstop_radius > 0:
        mask &= yy**2 + xx**2 > config.beamstop_radius**2
    if config.gap_width > 0:
        start = p // 2 + config.gap_offset
        stop = min(p, start + config.gap_width)
        mask[start:stop, :] = False
        mask[:, start:stop] = False
    return mask


def poisson_modulus(
    modulus: torch.Tensor,
    photons: float | np.ndarray,
    rngs: list[np.random.Generator],
    background: float | np.ndarray = 0.0,
) -> torch.Tensor:
    """Counting noise: I = |F|^2 scaled to ``photons`` total, plus a flat background of
    ``background`` expected counts per pixel, Poisson-sampled, sqrt.

    ``photons`` and ``background`` are scalars or one value per pattern (B,). One
    generator per pattern keeps each sample a pure function of its own seed.
    """
    intensity = (modulus.double() ** 2).numpy()
    total = intensity.sum(axis=(-2, -1), keepdims=True)
    photons = np.asarray(photons, dtype=np.float64).reshape(-1, 1, 1)
    background = np.asarray(background, dtype=np.float64).reshape(-1, 1, 1)
    expected = intensity * (photons / np.where(total > 0, total, 1.0)) + background
    return torch.from_numpy(np.sqrt(poisson_counts(expected, rngs))).to(modulus.dtype)


def poisson_counts(expected: np.ndarray, rngs: Sequence[np.random.Generator]) -> np.ndarray:
    """Poisson counts (int64) of expected counts (B, ...); row b is drawn by ``rngs[b]``.

    The one Poisson sampler of the package. The same generator given for every row draws
    the rows in order, exactly as one ``rng.poisson(expected)`` call would.
    """
    return np.stack([rng.poisson(lam) for rng, lam in zip(rngs, expected, strict=True)])


def dark_frame(shape: tuple[int, int], level: float, rng: np.random.Generator) -> np.ndarray:
    """(H, W) int32 dark counts: Poisson of mean ``level`` per pixel."""
    return rng.poisson(level, shape).astype(np.int32)


def gain_map(
    shape: tuple[int, int], level: float, spread: float, rng: np.random.Generator
) -> np.ndarray:
    """(H, W) float32 whitefield: ``level`` times a Gaussian gain of relative ``spread``.

    The gain is clipped to [0.5, 1.5] so no pixel is dead or doubled by chance; dead
    pixels are a mask (``dead_pixel_mask``).
    """
    gain = 1.0 + spread * rng.standard_normal(shape)
    return (level * np.clip(gain, 0.5, 1.5)).astype(np.float32)


def dead_pixel_mask(
    shape: tuple[int, int],
    window: tuple[slice, slice],
    count: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """(H, W) bool, True where measured: ``count`` dead pixels drawn inside ``window``.

    Rows and columns are drawn independently (rows first), so a pixel may be drawn twice.
    """
    rows = rng.integers(window[0].start, window[0].stop, count)
    cols = rng.integers(window[1].start, window[1].stop, count)
    mask = np.ones(shape, dtype=bool)
    mask[rows, cols] = False
    return mask


def raw_counts(
    expected: np.ndarray,
    gain: np.ndarray,
    dark: np.ndarray,
    saturation: int,
    rng: np.random.Generator,
) -> np.ndarray:
    """Raw int32 frames (F, H, W) of a counting detector from expected photons (F, H, W).

    Poisson(expected x gain) + dark, clipped at ``saturation``; ``gain`` (H, W) is the
    pixel response relative to 1 (0 on dead pixels) and ``dark`` (H, W) the dark counts.
    A reader that subtracts the dark and divides by the gain recovers ``expected``.
    """
    counts = poisson_counts(expected * gain, [rng] * len(expected)) + dark
    return np.minimum(counts, saturation).astype(np.int32)
