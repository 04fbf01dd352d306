"""Fused CPU kernels for the phasing loop's pixel-wise steps (numba).

The loop (``cdiflow.phasing.runner``) does, per iteration, the FFT pair and two
pixel-wise steps: the masked modulus projection with its chi^2, and the affine update
``x' = a x + c y`` of ER, HIO and RAAR; every few iterations shrink-wrap adds |x| and a
threshold cut. On a GPU torch fuses nothing either, but memory is fast; on a CPU the
dozen torch passes of those steps cost 3-4x the FFT pair (docs/phasing.md). Here each
step is one pass over the pixels, compiled by numba, so the loop runs near its FFT-only
bound.

What is computed stays defined once, elsewhere: the projection is
``cdiflow.physics.farfield.project_modulus`` (the torch path, ``_State.fourier``, is
checked against it, and these kernels against the torch path), and the update's
coefficients come from ``cdiflow.phasing.projections.COEFFICIENTS``, evaluated for a
pixel outside and a pixel inside the support (``FusedSteps.coefficients``); the
shrink-wrap steps are ``shrinkwrap.shrink_wrap``'s, tested for the same support. Only
the loops over pixels are written here.

numba is imported on first use, not when cdiflow is imported; compiled kernels are
cached on disk (numba's ``cache=True``), so a new process loads them in well under a
second. Without numba (``available()`` False) the runner keeps its torch path.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import types

import numpy as np
import torch

from cdiflow.physics.farfield import RATIO_EPS


@functools.cache
def available() -> bool:
    """Whether numba imports (the fused kernels can run)."""
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


@functools.cache
def _kernels():
    import numba

    # error_model="numpy": a division is not checked for zero (it is clamped), which is
    # what lets LLVM vectorise the loops; reassoc lets it vectorise the chi^2 sum; no
    # approximate reciprocals or square roots ("afn"/"arcp"): the projection stays exact
    # to rounding, like torch's.
    jit = numba.njit(
        nogil=True, cache=True, error_model="numpy", fastmath={"reassoc", "contract", "nsz"}
    )

    # Complex arrays go in as they are (numba reads z.real / z.imag and vectorises as
    # well as on a real view, and the conversion from torch costs half). A complex is
    # scaled by a real componentwise, ``complex(r * z.real, r * z.imag)``: the same
    # numbers as ``r * z`` (whose real's imaginary part is an exact zero) in half the
    # multiplies.
    one = np.float32(1)  # a literal 1 would make float32 arithmetic float64 in numba

    # ``gain`` and ``out_gain`` fold the FFTs' normalisation into this pass (each
    # normalising FFT is a pass of its own, ~10% of the pair): spec holds the
    # unnormalised FFT, |F| = gain |spec|, and what is written back carries out_gain for
    # an inverse that does not scale (``FusedSteps``).
    @jit
    def project_row(spec, m, eps, gain, out_gain):
        """One pattern: spec (n complex) projected in place; sum (|F| - m)^2. ``eps`` (the
        clamp) and the gains come in m's dtype, so float32 stays float32 throughout."""
        acc = eps - eps
        for i in range(m.shape[0]):
            z = spec[i]
            mag = np.sqrt(z.real * z.real + z.imag * z.imag) * gain
            d = mag - m[i]
            acc += d * d
            r = m[i] / (mag if mag > eps else eps) * out_gain
            spec[i] = complex(z.real * r, z.imag * r)
        return acc

    @jit
    def project_row_masked(spec, m, w, eps, gain, out_gain):
        """As ``project_row``; pixels with w == 0 (w: 0 or 1 in m's dtype) keep their
        value and add nothing. Selects, not ``1 + w (r - 1)``, which loses r's digits."""
        acc = eps - eps
        for i in range(m.shape[0]):
            z = spec[i]
            mag = np.sqrt(z.real * z.real + z.imag * z.imag) * gain
            d = (mag - m[i]) * w[i]
            acc += d * d
            r = (m[i] / (mag if mag > eps else eps) if w[i] > 0 else one) * out_gain
            spec[i] = complex(z.real * r, z.imag * r)
        return acc

    @jit
    def project(spec, m, norm, err, eps, gain, out_gain):
        for b in range(m.shape[0]):
            err[b] = project_row(spec[b], m[b], eps, gain, out_gain) / norm[b]

    @jit
    def project_masked(spec, m, w, norm, err, eps, gain, out_gain):
        for b in range(m.shape[0]):
            err[b] = project_row_masked(spec[b], m[b], w[b], eps, gain, out_gain) / norm[b]

    @jit
    def update_row(y, x, s, a0, a1, c0, c1):
        """y = a x + c y with (a, c) = (a0, c0) off the support (s = 0), (a1, c1) on it
        (selects: exact, and they vectorise)."""
        for i in range(s.shape[0]):
            inside = s[i] > 0
            a, c = (a1 if inside else a0), (c1 if inside else c0)
            # componentwise: numba multiplies a complex by a real as by a complex with
            # zero imaginary part (4 multiplies, not 2: 19% slower on the kernel alone)
            y[i] = complex(c * y[i].real + a * x[i].real, c * y[i].imag + a * x[i].imag)

    @jit
    def update(y, x, s, coef):
        for b in range(s.shape[0]):
            update_row(y[b], x[b], s[b], coef[b, 0], coef[b, 1], coef[b, 2], coef[b, 3])

    @jit
    def pair_peaks(row, zero):
        """(max of row's even entries, max of its odd ones), for the real view of a
        packed complex field (``zero``: a 0 of its dtype, the floor). Sixteen running
        maxima, not one: a single one is a chain LLVM does not vectorise (2.5x slower,
        measured)."""
        lanes = np.full(16, zero)
        whole = row.shape[0] // 16 * 16
        for i in range(0, whole, 16):
            for k in range(16):
                v = row[i + k]
                lanes[k] = v if v > lanes[k] else lanes[k]
        for i in range(whole, row.shape[0]):
            k = i % 2
            lanes[k] = row[i] if row[i] > lanes[k] else lanes[k]
        even, odd = zero, zero
        for k in range(0, 16, 2):
            even = lanes[k] if lanes[k] > even else even
            odd = lanes[k + 1] if lanes[k + 1] > odd else odd
        return even, odd

    @jit
    def magnitude_pairs(z, out, peak, zero):
        """|z[2j]| and |z[2j+1]|, each divided by its peak (0 stays 0), into the real and
        imaginary planes of out[j] (out: (ceil(B/2), 2n), the real view of the packed
        complex fields; an odd batch's last partner is zero); peak (B,) receives the
        peaks; ``zero`` comes in the reals' dtype."""
        for j in range(out.shape[0]):
            za, oj, single = z[2 * j], out[j], 2 * j + 1 == z.shape[0]
            zb = za if single else z[2 * j + 1]
            for i in range(za.shape[0]):
                oj[2 * i] = np.sqrt(za[i].real * za[i].real + za[i].imag * za[i].imag)
                mb = np.sqrt(zb[i].real * zb[i].real + zb[i].imag * zb[i].imag)
                oj[2 * i + 1] = zero if single else mb
            pa, pb = pair_peaks(oj, zero)
            da, db = (pa if pa > zero else one), (pb if pb > zero else one)
            for i in range(za.shape[0]):
                oj[2 * i] = oj[2 * i] / da
                oj[2 * i + 1] = oj[2 * i + 1] / db
            peak[2 * j] = pa
            if not single:
                peak[2 * j + 1] = pb

    @jit
    def threshold_pairs(blurred, peak, upper, fraction, out, zero):
        """out[2j] / out[2j+1] = the real / imaginary plane of blurred[j] (the real view,
        (ceil(B/2), 2n)) >= fraction times that plane's maximum, within ``upper`` (one row,
        shared, or one per pattern); nothing where peak[b] is 0 (a zero pattern's plane
        holds only its partner's rounding). ``&``, not ``and``: no branch, so the loop
        vectorises."""
        for j in range(blurred.shape[0]):
            row = blurred[j]
            tops = pair_peaks(row, -np.inf * one)
            for plane in range(2):
                b = 2 * j + plane
                if b < out.shape[0]:
                    cut = fraction * tops[plane]
                    ub, ob, keep = upper[min(b, upper.shape[0] - 1)], out[b], peak[b] > zero
                    for i in range(ob.shape[0]):
                        ob[i] = (row[2 * i + plane] >= cut) & ub[i] & keep

    return types.SimpleNamespace(
        project=project, project_masked=project_masked, update=update,
        magnitude_pairs=magnitude_pairs, threshold_pairs=threshold_pairs,
    )  # fmt: skip


def _flat_complex(t: torch.Tensor) -> np.ndarray:
    """A contiguous complex (B, P, P) tensor as its (B, P^2) numpy view."""
    if not t.is_contiguous():
        raise ValueError("the fused kernels need contiguous tensors")
    return t.numpy().reshape(t.shape[0], -1)


def _flat(t: torch.Tensor) -> np.ndarray:
    """A real (B, P, P) tensor as a (B, P^2) numpy array (a view when contiguous)."""
    return t.contiguous().numpy().reshape(t.shape[0], -1)


@dataclasses.dataclass(frozen=True)
class FusedSteps:
    """The two pixel-wise steps of the loop on one batch, with its fixed inputs as numpy
    views made once (the tensors behind them stay alive with the views).

    m : (B, n) measured modulus; norm : (B,) eq. 5's denominator; measured : (B, n) 1
    where measured, 0 elsewhere, or None (all measured); eps : the clamp, in m's dtype;
    gain, out_gain : 1/sqrt(n) and 1/n in m's dtype: ``project_`` takes the unscaled
    forward FFT (``cpu_fft.fft2``, ``torch.fft.fft2(x)``) and its output goes to an
    inverse that does not scale either (``cpu_fft.ifft2_``, ``norm="forward"``).
    """

    m: np.ndarray
    norm: np.ndarray
    measured: np.ndarray | None
    eps: np.floating
    gain: np.floating
    out_gain: np.floating

    @classmethod
    def of(cls, modulus: torch.Tensor, norm: torch.Tensor, mask: torch.Tensor | None):
        """For a (B, P, P) real ``modulus``, its (B,) ``norm`` and a bool ``mask``
        broadcastable to it (True = measured) or None."""
        m = _flat(modulus)
        measured = None if mask is None else _flat(mask.expand(modulus.shape).to(modulus.dtype))
        real, pixels = m.dtype.type, m.shape[-1]
        # 1/sqrt(n) and 1/n in float64, rounded once (exact when P is a power of 2)
        gains = real(1 / math.sqrt(pixels)), real(1 / pixels)
        return cls(m, norm.contiguous().numpy(), measured, real(RATIO_EPS), *gains)

    def project_(self, spectrum: torch.Tensor, err: np.ndarray) -> None:
        """In place: ``spectrum`` (B, P, P) complex becomes its masked modulus projection,
        as ``cdiflow.physics.farfield.project_modulus``; ``err`` (B,) receives eq. 5's
        chi^2 of the spectrum, ``sum (|F| - m)^2 / norm`` over the measured pixels;
        both sides unscaled (see the class)."""
        kernels, spec = _kernels(), _flat_complex(spectrum)
        gains = (self.gain, self.out_gain)
        if self.measured is None:
            kernels.project(spec, self.m, self.norm, err, self.eps, *gains)
        else:
            kernels.project_masked(spec, self.m, self.measured, self.norm, err, self.eps, *gains)

    @staticmethod
    def support_bytes(support: torch.Tensor) -> np.ndarray:
        """A (B, P, P) bool support as the (B, P^2) uint8 view ``update_`` reads (no copy
        when contiguous; as fast in the update as 0/1 reals, measured, and a quarter of
        the bytes)."""
        return _flat(support.contiguous().view(torch.uint8))

    @staticmethod
    def coefficients(coefficients, support: np.ndarray, beta: torch.Tensor) -> tuple:
        """What ``update_`` takes for one algorithm (``COEFFICIENTS[name]``), the support
        (``support_bytes``) and ``beta`` (B, 1, 1): per pattern (a_out, a_in, c_out,
        c_in), and the support."""
        real = beta.dtype
        a, c = coefficients(torch.tensor([False, True]), beta, real)
        shape = (beta.shape[0], 2)  # ER's coefficients do not depend on beta: broadcast
        a = torch.zeros(shape, dtype=real) if a is None else a.reshape(-1, 2).expand(shape)
        quad = torch.cat([a, c.reshape(-1, 2).expand(shape)], dim=1).numpy()
        return quad, support

    @staticmethod
    def update_(coefficients: tuple, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """In place: ``y`` becomes ``a x + c y`` pixel by pixel, ``(a, c)`` the pair of
        ``coefficients`` (from ``coefficients``) for a pixel off or on the support.
        ``x`` is not touched. Returns ``y``."""
        quad, support = coefficients
        _kernels().update(_flat_complex(y), _flat_complex(x), support, quad)
        return y


def magnitude_pairs(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``shrinkwrap.pack_pairs(magnitude(z))`` of a contiguous complex (B, P, P) tensor
    in one pass per pattern: (ceil(B/2), P, P) complex fields and the (B,) peaks."""
    packed = torch.empty(((z.shape[0] + 1) // 2, *z.shape[1:]), dtype=z.dtype)
    peak = torch.empty(z.shape[0], dtype=z.real.dtype)
    zero = peak.numpy().dtype.type(0)
    _kernels().magnitude_pairs(_flat_complex(z), _flat_reals(packed), peak.numpy(), zero)
    return packed, peak


def threshold_pairs(blurred, peak: torch.Tensor, upper: torch.Tensor, fraction: float):
    """Shrink-wrap's cut of ``blur_pairs``' packed (ceil(B/2), P, P) fields in one pass:
    pattern b's plane ``>= fraction * its maximum``, within ``upper`` ((P, P) or
    (B, P, P) bool), nowhere where ``peak[b]`` is 0, as ``shrinkwrap.shrink_wrap``'s torch
    path cuts it; (B, P, P) bool."""
    out = torch.empty((peak.shape[0], *blurred.shape[1:]), dtype=torch.bool)
    ub = upper.reshape(-1, *upper.shape[-2:]).contiguous()
    real = blurred.real.dtype
    cut = torch.tensor(fraction, dtype=real).numpy()[()]  # the fraction as torch rounds it
    flat = _flat_reals(blurred)
    _kernels().threshold_pairs(flat, peak.numpy(), _flat(ub), cut, _flat(out), flat.dtype.type(0))
    return out


def _flat_reals(packed: torch.Tensor) -> np.ndarray:
    """A contiguous complex (B, P, P) tensor as the (B, 2 P^2) numpy view of its reals."""
    return torch.view_as_real(packed).numpy().reshape(packed.shape[0], -1)
