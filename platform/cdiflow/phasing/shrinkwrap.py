"""Shrink-wrap support update (Marchesini et al. 2003), as the paper uses it.

The support is recomputed from the current iterate: blur ``|x|`` with a Gaussian, keep
the pixels above ``threshold`` times the blurred maximum, and clip the result to a fixed
square upper-bound support (the paper's "Support 2"). The support may therefore grow as
well as shrink. An update that leaves fewer than ``min_pixels`` pixels is a collapse.

The blur is a circular convolution done with the FFT (the transfer function of a
Gaussian of width ``sigma`` pixels). Circular convolution commutes with circular shifts,
so it gives the same support in the centred layout and in the unshifted layout that the
batched runner uses; on a 64 x 64 field with the object in the central 32 x 32 there is
no wrap-around in practice.
"""

from __future__ import annotations

import dataclasses
import math

import torch

from cdiflow.config import Config, require
from cdiflow.errors import SupportCollapsed
from cdiflow.phasing import cpu_kernels
from cdiflow.physics.farfield import magnitude

_DIMS2 = (-2, -1)


@dataclasses.dataclass(frozen=True)
class ShrinkWrap(Config):
    """When and how the support is updated.

    Attributes
    ----------
    start : first iteration (0-based) at which the support is updated (paper: 100).
    every : update period in iterations (paper: 10).
    sigma : Gaussian blur width in pixels.
    threshold : relative threshold on the blurred amplitude, in (0, 1).
    min_pixels : fewer pixels than this after an update is a collapse.
    stop : first iteration at which the support is no longer updated (0: never stops).
        A support frozen for the last iterations lets ER settle in one support instead
        of chasing a support that still moves with every update.
    """

    start: int = 100
    every: int = 10
    sigma: float = 1.0
    threshold: float = 0.1
    min_pixels: int = 4
    stop: int = 0

    def validate(self) -> None:
        require(self.start >= 0, f"shrink-wrap start must be >= 0, got {self.start}")
        require(self.every >= 1, f"shrink-wrap every must be >= 1, got {self.every}")
        require(self.sigma > 0, f"shrink-wrap sigma must be > 0, got {self.sigma}")
        require(0 < self.threshold < 1, f"threshold must be in (0, 1), got {self.threshold}")
        require(self.min_pixels >= 1, f"min_pixels must be >= 1, got {self.min_pixels}")
        require(self.stop >= 0, f"shrink-wrap stop must be >= 0 (0: never), got {self.stop}")

    def due(self, iteration: int) -> bool:
        """True if the support is updated at the start of ``iteration`` (0-based)."""
        if self.stop and iteration >= self.stop:
            return False
        return iteration >= self.start and (iteration - self.start) % self.every == 0


def gaussian_transfer(size: int, sigma: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Fourier transfer function of a unit-sum Gaussian, in ``torch.fft.fft2`` order.

    Returns a (size, size) real tensor ``exp(-2 pi^2 sigma^2 (fy^2 + fx^2))`` with
    frequencies in cycles per pixel (``torch.fft.fftfreq``).
    """
    f = torch.fft.fftfreq(size, device=device, dtype=dtype)
    f2 = f[:, None] ** 2 + f[None, :] ** 2
    return torch.exp(-2.0 * math.pi**2 * sigma**2 * f2)


def blurred_amplitude(x: torch.Tensor, transfer: torch.Tensor, fused: bool = False):
    """``|x|`` convolved (circularly) with the Gaussian whose transfer is ``transfer``.

    ``|x|`` is real and the transfer even, so the half spectrum of ``rfft2`` does: half
    the transform's work, and a contiguous real result (the ``.real`` of a complex
    inverse is a strided view, and reducing over it cost 40x more on CPU, measured).
    ``fused``: |x| in one pass of ``cpu_kernels`` (CPU, contiguous (B, P, P) x)."""
    amp = cpu_kernels.magnitude(x) if fused else magnitude(x)
    half = transfer[..., : amp.shape[-1] // 2 + 1]
    return torch.fft.irfft2(torch.fft.rfft2(amp) * half, s=amp.shape[-2:])


def shrink_wrap(
    x: torch.Tensor,
    upper_bound: torch.Tensor,
    sigma: float = 1.0,
    threshold: float = 0.1,
    transfer: torch.Tensor | None = None,
    fused: bool = False,
) -> torch.Tensor:
    """New support from the iterate ``x``: blur ``|x|``, threshold, clip to ``upper_bound``.

    Parameters
    ----------
    x : (..., P, P) complex iterate.
    upper_bound : bool tensor broadcastable to ``x``: the fixed square upper-bound support.
    sigma : Gaussian width in pixels (ignored if ``transfer`` is given).
    threshold : keep pixels with blurred amplitude >= threshold * its maximum (per pattern).
    transfer : optional precomputed ``gaussian_transfer`` (saves work in a loop).
    fused : the magnitude and the cut in ``cdiflow.phasing.cpu_kernels`` (one pass each;
        CPU, contiguous (B, P, P) ``x``) instead of torch ops: the same support.

    Returns
    -------
    (..., P, P) bool support. It may be larger or smaller than the previous one.
    """
    if transfer is None:
        transfer = gaussian_transfer(x.shape[-1], sigma, device=x.device, dtype=x.real.dtype)
    blurred = blurred_amplitude(x, transfer, fused)
    if fused:
        return cpu_kernels.threshold_support(blurred, upper_bound, threshold)
    peak = blurred.amax(_DIMS2, keepdim=True)
    support = torch.ge(blurred, threshold * peak).logical_and_(upper_bound)
    return support.logical_and_(peak > 0)


def check_support(support: torch.Tensor, min_pixels: int = 1) -> None:
    """Raise ``SupportCollapsed`` if any pattern's support has fewer than ``min_pixels``."""
    counts = support.flatten(-2).sum(-1)
    bad = (counts < min_pixels).nonzero().flatten().tolist()
    if bad:
        raise SupportCollapsed(f"support of pattern(s) {bad} has fewer than {min_pixels} pixel(s)")


def square_support(size: int, side: int, device=None) -> torch.Tensor:
    """A centred ``side`` x ``side`` square of True inside a ``size`` x ``size`` field."""
    s = torch.zeros(size, size, dtype=torch.bool, device=device)
    a = size // 2 - side // 2
    s[a : a + side, a : a + side] = True
    return s
