"""Diffraction of a 3D complex particle: the central slice through the Bragg peak.

By the Fourier-slice theorem, the central slice (k_z = 0) of the 3D transform of a
volume equals the 2D transform of the volume's projection along z, and for the discrete
FFT this holds exactly. ``fourier_slice_pattern`` (project, then a 2D FFT) is the fast
path the generator uses; ``literal_slice_pattern`` (3D FFT, then slice) is the literal
reading of the paper, kept as the reference a test holds equal.

Conventions: ``cdiflow.physics.fft`` (centred arrays, ortho FFTs). The object box N^3
is zero-padded to P^3 (P^2 for the projection); P = 2N gives oversampling 2.
"""

from __future__ import annotations

import math

import torch

from cdiflow.physics.fft import centred_fft3, object_modulus, pad_centre


def project_along_beam(volume: torch.Tensor) -> torch.Tensor:
    """Sum a (..., N, N, N) complex volume along z (axis -3) -> (..., N, N)."""
    return volume.sum(dim=-3)


def fourier_slice_pattern(volume: torch.Tensor, pattern_size: int) -> torch.Tensor:
    """Fast path: |2D FFT| of the projection padded to P x P (a centred modulus)."""
    return object_modulus(project_along_beam(volume), pattern_size)


def literal_slice_pattern(volume: torch.Tensor, pattern_size: int) -> torch.Tensor:
    """Reference path: |3D FFT| of the volume padded to P^3, central k_z = 0 slice.

    The ortho 3D transform carries an extra 1/sqrt(P) relative to the 2D one; it is
    multiplied back so both paths return the same numbers.
    """
    spectrum = centred_fft3(pad_centre(volume, pattern_size, ndim=3))
    return spectrum[..., pattern_size // 2, :, :].abs() * math.sqrt(pattern_size)
