"""The one FFT convention of cdiflow.

Every array that touches an FFT is stored **centred** (detector convention): the zero
frequency of a pattern, and the origin of an object, sit at index ``P // 2`` of each
axis. The forward model is

    F(x) = fftshift(fftn(ifftshift(x), norm="ortho"))

over the last two axes (or three, for the literal 3D path), so that Parseval holds with
no factor: ``sum |F(x)|^2 == sum |x|^2``. An object box of N x N sits in the middle of
a P x P field (``pad_centre``); N = 32 inside P = 64 gives oversampling 2 per axis.

Stored patterns are moduli (sqrt of intensity) normalised to a maximum of 1
(``normalise_modulus``); amplitude targets are normalised to a maximum of 1 as well.
Because of that per-pattern scale, ``cdiflow.metrics.chi2`` fits the one scale factor
that best matches a prediction to a measurement before it applies eq. 5.

All functions take torch tensors of any float or complex dtype, on any device, with
arbitrary leading batch dimensions.
"""

from __future__ import annotations

import torch

_DIMS2 = (-2, -1)
_DIMS3 = (-3, -2, -1)


def centred_fft2(x: torch.Tensor) -> torch.Tensor:
    """Forward 2D transform of a centred field (last two axes) -> centred spectrum."""
    return torch.fft.fftshift(
        torch.fft.fft2(torch.fft.ifftshift(x, dim=_DIMS2), norm="ortho"), dim=_DIMS2
    )


def centred_ifft2(k: torch.Tensor) -> torch.Tensor:
    """Inverse of ``centred_fft2``: centred spectrum -> centred field."""
    return torch.fft.fftshift(
        torch.fft.ifft2(torch.fft.ifftshift(k, dim=_DIMS2), norm="ortho"), dim=_DIMS2
    )


def centred_fft3(x: torch.Tensor) -> torch.Tensor:
    """Forward 3D transform of a centred volume (last three axes)."""
    return torch.fft.fftshift(
        torch.fft.fftn(torch.fft.ifftshift(x, dim=_DIMS3), dim=_DIMS3, norm="ortho"),
        dim=_DIMS3,
    )


def pad_centre(x: torch.Tensor, size: int, ndim: int = 2) -> torch.Tensor:
    """Zero-pad the last ``ndim`` axes of a centred array to ``size`` each.

    The origin (index ``n // 2``) lands on index ``size // 2``, so the padded array is
    centred in the same convention.
    """
    n = x.shape[-1]
    if any(s != n for s in x.shape[-ndim:]):
        raise ValueError(f"pad_centre expects square/cubic last axes, got {tuple(x.shape)}")
    if size < n:
        raise ValueError(f"cannot pad size {n} to smaller size {size}")
    before = size // 2 - n // 2
    after = size - n - before
    pad: list[int] = []
    for _ in range(ndim):
        pad += [before, after]
    return torch.nn.functional.pad(x, pad)


def crop_centre(x: torch.Tensor, size: int, ndim: int = 2) -> torch.Tensor:
    """Inverse of ``pad_centre``: the central ``size`` of each of the last ``ndim`` axes."""
    n = x.shape[-1]
    start = n // 2 - size // 2
    index = (Ellipsis,) + tuple(slice(start, start + size) for _ in range(ndim))
    return x[index]


def object_modulus(obj: torch.Tensor, pattern_size: int) -> torch.Tensor:
    """|F| of a centred complex N x N object padded to P x P (unnormalised, ortho FFT).

    Equal to ``centred_fft2(pad_centre(obj, P)).abs()`` at about 60% of its cost: |F|
    does not see where the object sits, so the transform pads at the end (no shift
    before it) and shifts the real modulus, not the complex spectrum, after it.
    """
    if max(obj.shape[-2:]) > pattern_size:  # fft2 would crop it silently
        raise ValueError(f"object {tuple(obj.shape[-2:])} does not fit pattern {pattern_size}")
    spectrum = torch.fft.fft2(obj, s=(pattern_size, pattern_size), norm="ortho")
    return torch.fft.fftshift(spectrum.abs(), dim=_DIMS2)


def normalise_modulus(modulus: torch.Tensor) -> torch.Tensor:
    """Scale each pattern (last two axes) to a maximum of 1; all-zero stays zero."""
    peak = modulus.amax(dim=_DIMS2, keepdim=True)
    return modulus / torch.where(peak > 0, peak, torch.ones_like(peak))
