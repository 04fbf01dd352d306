"""Diffraction of a 3D complex particle: the central slice through the Bragg peak.

By the Fourier-slice theorem, the central slice (k_z = 0) of the 3D transform of a
volume equals the 2D transform of the volume's projection along z, and for the discrete
FFT this holds exactly. ``fourier_slice_pattern`` (project, then a 2D FFT) is the fast
path the generator uses; ``literal_slice_pattern`` (3D FFT, then slice) is the literal
reading of the paper, kept as the reference a test holds equal. Off the Bragg peak,
``rocking_patterns`` gives the planes k_z = q of a rocking scan the same way: the plane
k_z = q of the 3D transform is the 2D transform of the projection of the volume times
exp(-2 pi i q z / P), exact for the discrete FFT too.

Conventions: ``cdiflow.physics.fft`` (centred arrays, ortho FFTs). The object box N^3
is zero-padded to P^3 (P^2 for the projection); P = 2N gives oversampling 2.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

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


def rocking_patterns(
    volume: torch.Tensor, pattern_size: int, offsets: Sequence[int]
) -> torch.Tensor:
    """|F| on the planes k_z = q of the 3D diffraction, one per offset q (a rocking scan).

    Parameters
    ----------
    volume : (..., N, N, N) complex, centred, indexed (z, y, x).
    pattern_size : P; the volume is zero-padded to P^3 (P >= N).
    offsets : Q integer offsets q of the planes from the Bragg peak, in pixels of the
        P-point transform (0 is the central slice).

    Returns
    -------
    (..., Q, P, P) real, centred moduli in the 2D ortho scale of ``fourier_slice_pattern``
    (plane q = 0 equals it): the planes of the literal 3D transform times sqrt(P).
    """
    n = volume.shape[-3]
    z = torch.arange(n, dtype=torch.float64) - n // 2
    q = torch.as_tensor(offsets, dtype=torch.float64)
    ramps = torch.exp(-2j * math.pi * torch.outer(q, z) / pattern_size).to(volume.dtype)
    projections = torch.einsum("qz,...zyx->...qyx", ramps, volume)
    return object_modulus(projections, pattern_size)
