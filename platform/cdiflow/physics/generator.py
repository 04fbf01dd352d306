"""Synthetic training samples: superellipsoid particles with strong random phase.

A sample is a pure function of (base seed, sample index): every random draw comes from
``numpy.random.default_rng([seed, index])``, in a fixed order, so a dataset does not
depend on how it was partitioned, batched, or on the cluster size. Computation is
batched and vectorised in float32 on torch.

Per sample (paper section 2 and eqs. 2-3):
1. shape parameters a, b, c, e, n, correlation lengths Lx, Ly, Lz and a uniform rotation;
2. the superellipsoid indicator at rotated coordinates on an N^3 grid, smoothed by a
   Gaussian of width ``edge_sigma`` (the paper's edge filter);
3. a Gaussian-correlated phase made on the particle's axes and rotated with it (read
   at R^T r by trilinear interpolation), spanning ``phase_span`` inside the particle;
4. the projection along the beam, referenced to a global phase that makes its total
   real and positive (|F| does not depend on it; it removes the one ambiguity a network
   cannot learn);
5. the diffraction: |2D FFT| of the projection padded to P x P (the central slice of the
   3D diffraction, exactly), normalised to a maximum of 1; optional detector effects.

Targets: amplitude = |projection| / max, phase target p = (phi + pi) / (2 pi) where the
amplitude exceeds ``support_threshold`` and 0 elsewhere (a fixed linear map, so
phi = 2 pi p - pi exactly).
"""

from __future__ import annotations

import dataclasses
import functools
import math

import numpy as np
import torch

from cdiflow.config import Config, require
from cdiflow.physics.detector import DetectorConfig, detector_mask, poisson_modulus
from cdiflow.physics.diffraction import fourier_slice_pattern
from cdiflow.physics.fft import normalise_modulus
from cdiflow.physics.oversampling import to_oversampling
from cdiflow.physics.particles import (
    TRUNCATE,
    apply_separable,
    gaussian_matrix,
    particle_coordinates,
    quaternion_to_matrix,
    superellipsoid_extent,
    superellipsoid_level_local,
)
from cdiflow.physics.phase_field import correlated_field, sample_field, scale_to_span
from cdiflow.physics.variation import SampleDetector, Variation, draw_sample_detector, sample_masks

Range = tuple[float, float]

# Linear oversampling of the realistic preset: measured scans' range (issue: 2 to 6).
REALISTIC_OVERSAMPLING = (2.0, 6.0)

# Columns of per-sample parameters, in the order ``draw_parameters`` fills them.
PARAMETER_NAMES = ("a", "b", "c", "e", "n", "lx", "ly", "lz", "qw", "qx", "qy", "qz")


@dataclasses.dataclass(frozen=True)
class GeneratorConfig(Config):
    """Everything that defines the synthetic data set (logged with every data set)."""

    object_size: int = 32  # N: object box, voxels per axis
    pattern_size: int = 64  # P: diffraction pattern, pixels per axis (P >= 2N)
    semi_axes: Range = (4.0, 8.0)  # a, b, c drawn uniformly in this range, voxels
    roundness: Range = (0.5, 2.0)  # e, n drawn uniformly in this range
    correlation_length: Range = (3.0, 12.0)  # Lx, Ly, Lz drawn uniformly, voxels
    phase_span: float = 2 * math.pi  # radians spanned by the phase inside the particle
    edge_sigma: float = 0.7  # Gaussian edge smoothing, voxels
    support_threshold: float = 0.1  # amplitude fraction that defines the phase support
    detector: DetectorConfig = DetectorConfig()
    variation: Variation | None = None  # per-sample detector and edges; None: the paper's

    @classmethod
    def realistic(cls, **changes) -> GeneratorConfig:
        """The ``realistic`` preset: the paper's particles, detected as real scans are,
        oversampled 2 to 6 times (``REALISTIC_OVERSAMPLING``)."""
        return cls(variation=Variation(oversampling=REALISTIC_OVERSAMPLING), **changes)

    @property
    def preset(self) -> str:
        return "paper" if self.variation is None else "realistic"

    def to_dict(self) -> dict:
        # Without variation the dict is the one the paper's preset always had, so data
        # sets and fingerprints made before the key existed still match.
        data = super().to_dict()
        if self.variation is None:
            del data["variation"]
        return data

    def validate(self) -> None:
        require(self.object_size > 0, f"object_size must be positive, got {self.object_size}")
        require(self.pattern_size > 0, f"pattern_size must be positive, got {self.pattern_size}")
        require(
            self.pattern_size >= 2 * self.object_size,
            f"object box {self.object_size} does not fit pattern {self.pattern_size} with "
            "oversampling >= 2 (need pattern_size >= 2 * object_size)",
        )
        for name in ("semi_axes", "roundness", "correlation_length"):
            lo, hi = getattr(self, name)
            require(0 < lo <= hi, f"{name} must satisfy 0 < low <= high, got {(lo, hi)}")
        reach = math.sqrt(3) * self.semi_axes[1] + 3 * self.widest_edge
        require(
            reach <= self.object_size / 2,
            f"semi_axes up to {self.semi_axes[1]} (reach {reach:.1f} voxels with "
            f"edge smoothing) do not fit the object box of {self.object_size} "
            f"(half-width {self.object_size / 2})",
        )
        require(
            0 < self.phase_span <= 2 * math.pi,
            f"phase_span must be in (0, 2 pi], got {self.phase_span}",
        )
        require(self.edge_sigma >= 0, "edge_sigma must be >= 0")
        require(0 < self.support_threshold < 1, "support_threshold must be in (0, 1)")
        require(
            self.variation is None or (self.detector.photons == 0 and not self.detector.has_mask),
            "detector effects come from variation in the realistic preset: leave detector "
            "at its defaults when variation is set",
        )

    @property
    def has_mask(self) -> bool:
        """True when samples carry a mask (a beamstop or gaps; always in the realistic preset)."""
        return self.variation is not None or self.detector.has_mask

    @property
    def widest_edge(self) -> float:
        """The largest edge smoothing any sample gets (voxels)."""
        if self.variation is None:
            return self.edge_sigma
        return max(self.edge_sigma, *self.variation.edge_sigmas)


@dataclasses.dataclass(frozen=True)
class SampleBatch:
    """Generated samples, numpy float32, one row per index.

    modulus (B, P, P), amplitude (B, N, N), phase (B, N, N) target in [0, 1),
    mask (P, P) bool shared by all rows, (B, P, P) one per row (the realistic preset), or
    None (True = measured), parameters {name: (B,)}.
    """

    indices: np.ndarray
    modulus: np.ndarray
    amplitude: np.ndarray
    phase: np.ndarray
    mask: np.ndarray | None
    parameters: dict[str, np.ndarray]


def sample_rng(seed: int, index: int) -> np.random.Generator:
    """The generator that owns every random draw of sample ``index``."""
    return np.random.default_rng([int(seed), int(index)])


def draw_parameters(config: GeneratorConfig, rng: np.random.Generator) -> np.ndarray:
    """Shape, correlation lengths and a uniform rotation quaternion, as ``PARAMETER_NAMES``."""
    axes = rng.uniform(*config.semi_axes, size=3)
    rough = rng.uniform(*config.roundness, size=2)
    lengths = rng.uniform(*config.correlation_length, size=3)
    q = rng.standard_normal(4)
    q = q / np.linalg.norm(q)
    return np.concatenate([axes, rough, lengths, q])


def draw_inputs(
    config: GeneratorConfig, rngs: list[np.random.Generator]
) -> tuple[np.ndarray, torch.Tensor]:
    """Every random input of the samples, from each sample's own generator, in order.

    Each generator draws the sample's parameters, then the seed of a torch generator
    that draws its phase noise (torch's vectorised normals are 3x faster than numpy's).
    Callers that need one sample's particle (``sample_volumes``) use this too, so they
    get the data set's particle.

    Returns
    -------
    parameters : (B, 12) float64, as ``PARAMETER_NAMES``.
    noise : (B, N, N, N) float32 standard normal noise for the phase field.
    """
    n = config.object_size
    parameters = np.stack([draw_parameters(config, rng) for rng in rngs])
    noise = torch.empty((len(rngs), n, n, n), dtype=torch.float32)
    for rng, volume in zip(rngs, noise, strict=True):
        volume.normal_(generator=torch.Generator().manual_seed(int(rng.integers(2**63))))
    return parameters, noise


def sample_volumes(config: GeneratorConfig, seed: int, indices) -> torch.Tensor:
    """The complex (B, N, N, N) particles of samples ``indices``, as in the data set."""
    rngs = [sample_rng(seed, i) for i in np.asarray(indices, dtype=np.int64)]
    return complex_volumes(config, *draw_inputs(config, rngs))


def rotation_matrices(parameters: np.ndarray) -> torch.Tensor:
    """(B, 3, 3) float64 rotations from the quaternion columns of (B, 12) parameters."""
    return torch.from_numpy(np.stack([quaternion_to_matrix(q) for q in parameters[:, 8:]]))


def particle_fields(
    config: GeneratorConfig,
    parameters: np.ndarray,
    noise: torch.Tensor,
    window: tuple[int, int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The particles' 3D amplitude and phase, float32, indexed (z, y, x).

    Parameters
    ----------
    parameters : (B, 12) as ``PARAMETER_NAMES``.
    noise : (B, N, N, N) float32 standard normal noise for the phase field.
    window : optional (wz, wy, wx) centred window (as ``crop_centre`` cuts it) to
        compute; it must hold the particles and their blurred edges (``window_sizes``),
        and the fields inside it are then those of the full N^3 box.

    Returns
    -------
    amplitude, phase : (B, wz, wy, wx) each ((B, N, N, N) without a window).
    """
    n = config.object_size
    window = window or (n, n, n)
    p = torch.from_numpy(np.asarray(parameters, dtype=np.float64))
    z, y, x = (torch.arange(w, dtype=torch.float32) - w // 2 for w in window)
    z, y, x = z.view(-1, 1, 1), y.view(1, -1, 1), x.view(1, 1, -1)
    local = particle_coordinates(z, y, x, rotation_matrices(parameters))
    inside = superellipsoid_level_local(local, p[:, 0:3], p[:, 3:5]) <= 1
    edge = _edge_matrix(n, config.edge_sigma)
    ez, ey, ex = (_centred_block(edge, w) for w in window)
    amplitude = apply_separable(inside.float(), ez, ey, ex)
    # The phase is made on the particle's axes and turns with it (paper section 2).
    field = correlated_field(torch.as_tensor(noise), p[:, 5:8].float())
    phase = scale_to_span(sample_field(field, local), inside, config.phase_span)
    return amplitude, phase


@functools.lru_cache(maxsize=8)
def _edge_matrix(n: int, sigma: float) -> torch.Tensor:
    """The edge-smoothing matrix, built once per (N, sigma); callers never modify it."""
    return gaussian_matrix(n, torch.tensor(sigma))


def _centred_block(matrix: torch.Tensor, size: int) -> torch.Tensor:
    """The central (size, size) block of an (n, n) matrix (the window's own axis)."""
    start = matrix.shape[-1] // 2 - size // 2
    return matrix[start : start + size, start : start + size]


def window_sizes(config: GeneratorConfig, parameters: np.ndarray) -> np.ndarray:
    """(B, 3) int sizes (wz, wy, wx) of the centred windows that hold each particle.

    A window holds every voxel of the particle (``superellipsoid_extent``) and of its
    edge blur (cut at ``TRUNCATE`` sigma), rounded up to a multiple of 4 so that few
    distinct sizes occur, and at most N. It depends on the sample's own parameters
    only, so a sample stays a pure function of (seed, index).
    """
    n = config.object_size
    extent = superellipsoid_extent(
        parameters[:, 0:3], parameters[:, 3:5], rotation_matrices(parameters).numpy()
    )
    # Voxel centres sit on integers; 1e-3 covers float32 rounding of the level test.
    reach = np.floor(extent + 1e-3) + math.floor(TRUNCATE * config.edge_sigma)
    size = 2 * reach + 2  # the window covers -size/2 .. size/2 - 1
    return np.minimum(np.ceil(size / 4) * 4, n).astype(np.int64)


def particle_projections(
    config: GeneratorConfig, parameters: np.ndarray, noise: torch.Tensor
) -> torch.Tensor:
    """Projections along the beam of the particles' complex fields, (B, N, N) complex64.

    Equal to ``project_along_beam(complex_volumes(...))``, but each particle is computed
    only in its own window (``window_sizes``; on average a sixth of the N^3 box for the
    default config), batched by window size. Only the phase field is made on the whole
    box, since its correlations reach across it.
    """
    n = config.object_size
    windows = window_sizes(config, parameters)
    out = torch.zeros((len(parameters), n, n), dtype=torch.complex64)
    for window in np.unique(windows, axis=0):
        rows = np.flatnonzero((windows == window).all(axis=1))
        wz, wy, wx = (int(w) for w in window)
        amplitude, phase = particle_fields(config, parameters[rows], noise[rows], (wz, wy, wx))
        y0, x0 = n // 2 - wy // 2, n // 2 - wx // 2
        out[rows, y0 : y0 + wy, x0 : x0 + wx] = project_fields(amplitude, phase)
    return out


def complex_volumes(
    config: GeneratorConfig, parameters: np.ndarray, noise: torch.Tensor
) -> torch.Tensor:
    """The particles' complex 3D fields s(r) exp(i phi(r)), (B, N, N, N) complex64."""
    return torch.polar(*particle_fields(config, parameters, torch.as_tensor(noise)))


def project_fields(amplitude: torch.Tensor, phase: torch.Tensor) -> torch.Tensor:
    """Projection along z of amplitude * exp(i phase), without building the complex volume.

    Equal to ``project_along_beam(torch.polar(amplitude, phase))``; two real reductions of
    cos and sin are about 3x cheaper than a complex polar volume.
    """
    real = (amplitude * torch.cos(phase)).sum(dim=-3)
    imag = (amplitude * torch.sin(phase)).sum(dim=-3)
    return torch.complex(real, imag)


def reference_global_phase(projection: torch.Tensor) -> torch.Tensor:
    """Multiply each (B, N, N) projection by the unit phase making its total real > 0."""
    total = projection.sum(dim=(-2, -1), keepdim=True)
    return projection * (total.conj() / total.abs().clamp_min(1e-30))


def targets_from_projection(
    projection: torch.Tensor, support_threshold: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Amplitude (max 1) and phase target p = (phi + pi)/(2 pi) in the support, else 0."""
    magnitude = projection.abs()
    amplitude = magnitude / magnitude.amax(dim=(-2, -1), keepdim=True).clamp_min(1e-30)
    phase = (torch.angle(projection) + math.pi) / (2 * math.pi)
    phase = torch.where(amplitude > support_threshold, phase.clamp(0, 1 - 1e-7), 0.0)
    return amplitude, phase


def generate_samples(config: GeneratorConfig, seed: int, indices) -> SampleBatch:
    """Generate the samples ``indices`` of the data set defined by (config, seed)."""
    indices = np.asarray(indices, dtype=np.int64)
    rngs = [sample_rng(seed, i) for i in indices]
    parameters, noise = draw_inputs(config, rngs)
    draws = None
    if config.variation is not None:  # after the paper's draws, so those stay the same
        draws = [draw_sample_detector(config.variation, rng) for rng in rngs]
    projection = _projections(config, parameters, noise, draws)
    if draws is not None and draws[0].oversampling is not None:
        targets = [d.oversampling for d in draws]
        projection = to_oversampling(
            projection, targets, config.pattern_size, config.support_threshold
        )
    projection = reference_global_phase(projection)
    amplitude, phase = targets_from_projection(projection, config.support_threshold)
    # The central slice of the 3D diffraction (Fourier-slice theorem, exact).
    modulus = fourier_slice_pattern(projection.unsqueeze(-3), config.pattern_size)
    modulus, mask = _detect(config, modulus, rngs, draws)
    if mask is not None:
        modulus = modulus * torch.from_numpy(mask)
    modulus = normalise_modulus(modulus)
    return SampleBatch(
        indices=indices,
        modulus=modulus.numpy().astype(np.float32, copy=False),
        amplitude=amplitude.numpy().astype(np.float32, copy=False),
        phase=phase.numpy().astype(np.float32, copy=False),
        mask=mask,
        parameters={name: parameters[:, i] for i, name in enumerate(PARAMETER_NAMES)},
    )


def _projections(config, parameters, noise, draws: list[SampleDetector] | None):
    """``particle_projections``, each sample with its own edge smoothing when drawn."""
    if draws is None:
        return particle_projections(config, parameters, noise)
    sigmas = np.array([d.edge_sigma for d in draws])
    out = torch.zeros((len(draws), config.object_size, config.object_size), dtype=torch.complex64)
    for sigma in np.unique(sigmas):
        rows = np.flatnonzero(sigmas == sigma)
        edged = dataclasses.replace(config, edge_sigma=float(sigma))
        out[rows] = particle_projections(edged, parameters[rows], noise[rows])
    return out


def _detect(config, modulus, rngs, draws: list[SampleDetector] | None):
    """Counting noise and mask: the detector config's, or each sample's drawn one.

    Returns the noisy modulus and a (P, P) mask shared by all samples, a (B, P, P) mask
    of one per sample, or None where every pixel is measured.
    """
    if draws is not None:
        photons = np.array([d.photons for d in draws])
        background = np.array([d.background for d in draws])
        modulus = poisson_modulus(modulus, photons, rngs, background)
        return modulus, sample_masks(draws, config.pattern_size)
    det = config.detector
    if det.photons > 0:
        modulus = poisson_modulus(modulus, det.photons, rngs)
    return modulus, detector_mask(det, config.pattern_size) if det.has_mask else None
