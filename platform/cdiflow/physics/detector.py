"""Optional detector realism (off by default; beyond the paper).

Poisson counting noise at a given number of photons per pattern, a central beamstop and
detector-gap stripes. A mask is True where a pixel is *measured*; masked pixels carry 0
in the stored modulus and stay free during phasing.
"""

from __future__ import annotations

import dataclasses

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
    modulus: torch.Tensor, photons: float, rngs: list[np.random.Generator]
) -> torch.Tensor:
    """Counting noise: I = |F|^2 scaled to ``photons`` total, Poisson-sampled, sqrt.

    One generator per pattern keeps each sample a pure function of its own seed.
    """
    intensity = (modulus.double() ** 2).numpy()
    total = intensity.sum(axis=(-2, -1), keepdims=True)
    expected = intensity * (photons / np.where(total > 0, total, 1.0))
    counts = np.stack([rng.poisson(lam) for rng, lam in zip(rngs, expected, strict=True)])
    return torch.from_numpy(np.sqrt(counts)).to(modulus.dtype)
