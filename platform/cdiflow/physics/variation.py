"""Per-sample variation for training data like real scans (the ``realistic`` preset).

The paper's data set is noise-free, unmasked and made with one edge smoothing. Measured
patterns are not: their photon counts span orders of magnitude, a beamstop hides the
centre, detector modules leave gaps, the edges of real particles are more or less sharp,
and a flat background (air scatter, dark counts) sits under everything. ``Variation``
draws all of these per sample, from the sample's own generator, after the draws of the
paper's generator, so a sample is still a pure function of (seed, index) and the paper's
preset (``variation=None``) is unchanged to the bit.

The particle size relative to the pattern: the object box of N = 32 voxels and the
paper's semi-axes (4 to 8 voxels) give linear oversampling between about 4 and 8 per
axis, and measured scans are often nearer 2. With ``oversampling`` set (the realistic
preset: 2 to 6) each sample draws a target and its projected object is magnified to it
(``cdiflow.physics.oversampling``), as far as the box allows (down to about 2.1).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from cdiflow.config import Config, require
from cdiflow.physics.detector import DetectorConfig, detector_mask

Range = tuple[float, float]


@dataclasses.dataclass(frozen=True)
class Variation(Config):
    """Ranges each sample's detector and edges are drawn from.

    Attributes
    ----------
    photons : total expected counts per pattern, drawn log-uniformly in this range.
    background : flat background, expected counts per pixel, drawn uniformly.
    beamstop_radius : pixels, drawn uniformly (below 0.5: no beamstop).
    gap_probability : chance that a pattern has detector gaps.
    gap_width : (low, high) pixels of the two gap stripes, integers, inclusive.
    gap_offset : (low, high) pixels from the centre to the stripes, integers, inclusive.
    edge_sigmas : edge smoothing values (voxels) drawn with equal chance; few distinct
        values, so the generator still batches particles of one smoothing together.
    oversampling : (low, high) linear oversampling drawn log-uniformly, the object
        magnified to it; None keeps the particles' own (4 to 8), and draws nothing, so
        data made before the field existed keep their bits.
    """

    photons: Range = (1e4, 1e9)
    background: Range = (0.0, 1.0)
    beamstop_radius: Range = (0.0, 3.0)
    gap_probability: float = 0.5
    gap_width: tuple[int, int] = (1, 3)
    gap_offset: tuple[int, int] = (4, 20)
    edge_sigmas: tuple[float, ...] = (0.4, 0.55, 0.7)
    oversampling: Range | None = None

    def to_dict(self) -> dict:
        # Without oversampling the dict is the one the preset had before the key existed,
        # so data sets and fingerprints made then still match.
        data = super().to_dict()
        if self.oversampling is None:
            del data["oversampling"]
        return data

    def validate(self) -> None:
        lo, hi = self.photons
        require(0 < lo <= hi, f"variation.photons must satisfy 0 < low <= high, got {(lo, hi)}")
        for name in ("background", "beamstop_radius", "gap_width", "gap_offset"):
            lo, hi = getattr(self, name)
            require(0 <= lo <= hi, f"variation.{name} must satisfy 0 <= low <= high")
        require(0 <= self.gap_probability <= 1, "variation.gap_probability must be in [0, 1]")
        require(len(self.edge_sigmas) > 0, "variation.edge_sigmas must not be empty")
        require(min(self.edge_sigmas) >= 0, "variation.edge_sigmas must be >= 0")
        if self.oversampling is not None:
            lo, hi = self.oversampling
            require(
                2 <= lo <= hi,
                f"variation.oversampling must satisfy 2 <= low <= high, got {(lo, hi)}",
            )


@dataclasses.dataclass(frozen=True)
class SampleDetector:
    """One sample's draws: its counts, background, mask geometry and edge smoothing."""

    photons: float
    background: float
    detector: DetectorConfig
    edge_sigma: float
    oversampling: float | None = None


def draw_sample_detector(variation: Variation, rng: np.random.Generator) -> SampleDetector:
    """Draw one sample's detector from its generator, always in the same order."""
    log_lo, log_hi = (math.log10(v) for v in variation.photons)
    photons = 10.0 ** rng.uniform(log_lo, log_hi)
    background = rng.uniform(*variation.background)
    radius = rng.uniform(*variation.beamstop_radius)
    has_gaps = rng.uniform() < variation.gap_probability
    width = int(rng.integers(variation.gap_width[0], variation.gap_width[1] + 1))
    offset = int(rng.integers(variation.gap_offset[0], variation.gap_offset[1] + 1))
    sigma = variation.edge_sigmas[int(rng.integers(len(variation.edge_sigmas)))]
    oversampling = None
    if variation.oversampling is not None:  # drawn last: the draws above keep their values
        log_lo, log_hi = (math.log(v) for v in variation.oversampling)
        oversampling = float(math.exp(rng.uniform(log_lo, log_hi)))
    detector = DetectorConfig(
        beamstop_radius=radius if radius >= 0.5 else 0.0,
        gap_width=width if has_gaps else 0,
        gap_offset=offset,
    )
    return SampleDetector(float(photons), float(background), detector, float(sigma), oversampling)


def sample_masks(draws: list[SampleDetector], pattern_size: int) -> np.ndarray:
    """(B, P, P) bool, True where measured, one mask per sample."""
    return np.stack([detector_mask(d.detector, pattern_size) for d in draws])
