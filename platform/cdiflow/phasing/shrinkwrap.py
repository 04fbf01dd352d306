"""Shrink-wrap support update (Marchesini et al. 2003), as the paper uses it.

The support is recomputed from the current iterate: blur ``|x|`` with a Gaussian, keep
the pixels above ``threshold`` times the blurred maximum, and clip the result to a fixed
square upper-bound support (the paper's "Support 2"). The support may therefore grow as
well as shrink. An update that leaves fewer than ``min_pixels`` pixels is a collapse.

The blur is a circular convolution done with the FFT (the transfer function of a
Gaussian of width ``sigma`` pixels), two patterns per complex transform
(``pack_pairs``, ``blur_pairs``). Circular convolution commutes with circular shifts,
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
from cdiflow.phasing import cpu_fft, cpu_kernels
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


def pack_pairs(amplitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Real (B, P, P) ``amplitude`` -> ``(packed, peak)``: each pattern divided by its peak
    (0 stays 0), patterns 2j and 2j+1 as the real and imaginary planes of ``packed[j]``
    ((ceil(B/2), P, P) complex; an odd last pattern has a zero partner), and the (B,)
    peaks. Dividing by the peak keeps a faint pattern clear of its partner's rounding
    (the cut is relative, so the support does not change)."""
    peak = amplitude.amax(_DIMS2)
    unit = amplitude / torch.where(peak > 0, peak, 1)[:, None, None]
    if unit.shape[0] % 2:
        unit = torch.cat([unit, torch.zeros_like(unit[:1])])
    return torch.complex(unit[0::2], unit[1::2]), peak


def blur_pairs(packed: torch.Tensor, transfer: torch.Tensor, fused: bool = False) -> torch.Tensor:
    """Both real planes of each complex ``packed`` field convolved (circularly) with the
    Gaussian whose (P, P) transfer is ``transfer``: the transfer is real and even, so a
    complex transform blurs the two planes at once and keeps them apart. One complex
    transform of B/2 fields costs less than B real ones (``rfft2``/``irfft2`` of 32
    fields of 64 x 64 took 2.3x one complex pair of 16, measured on CPU). ``fused``: the
    fused CPU loop's unscaled pair (``cpu_fft``), the inverse's 1/n folded into the
    transfer; the same blur to rounding."""
    fft2, ifft2 = (cpu_fft.fft2, cpu_fft.ifft2_) if fused else (torch.fft.fft2, torch.fft.ifft2)
    scale = 1 / transfer.numel() if fused else 1  # torch's ifft2 applies its own 1/n
    # the transfer laid out as the spectrum's (P, P, 2) reals, broadcast over the batch
    # only: with a trailing size-1 axis instead the multiply took 141 us against 13 us
    # (16 fields of 64 x 64, 1 CPU thread); real x real, no complex conversion
    pairs = (transfer * scale)[..., None].expand(*transfer.shape, 2).contiguous()
    spectrum = fft2(packed)
    torch.view_as_real(spectrum).mul_(pairs)
    return ifft2(spectrum)


def unpack_pairs(packed: torch.Tensor, batch: int) -> torch.Tensor:
    """The real planes of ``pack_pairs``' complex fields back as (batch, P, P) reals."""
    planes = torch.view_as_real(packed).movedim(-1, 1)
    return planes.reshape(-1, *packed.shape[-2:])[:batch]


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
    (..., P, P) bool support. It may be larger or smaller than the previous one; it is
    empty where ``x`` is zero.
    """
    if transfer is None:
        transfer = gaussian_transfer(x.shape[-1], sigma, device=x.device, dtype=x.real.dtype)
    if fused:
        packed, peak = cpu_kernels.magnitude_pairs(x)
        blurred = blur_pairs(packed, transfer, fused=True)
        return cpu_kernels.threshold_pairs(blurred, peak, upper_bound, threshold)
    flat = x.reshape(-1, *x.shape[-2:])
    packed, peak = pack_pairs(magnitude(flat))
    blurred = unpack_pairs(blur_pairs(packed, transfer), flat.shape[0])
    cut = threshold * blurred.amax(_DIMS2, keepdim=True)
    support = torch.ge(blurred, cut).logical_and_(upper_bound.reshape(-1, *x.shape[-2:]))
    return support.logical_and_(peak[:, None, None] > 0).reshape(x.shape)


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
