"""A small, slow numpy reference of the phasing runner: test oracle only.

Written independently of the torch engine, in the centred convention with explicit
fftshifts, one pattern at a time, straight from the formulas.
"""

from __future__ import annotations

import numpy as np


def fft(x):
    return np.fft.fftshift(np.fft.fft2(np.fft.ifftshift(x), norm="ortho"))


def ifft(k):
    return np.fft.fftshift(np.fft.ifft2(np.fft.ifftshift(k), norm="ortho"))


def blur(a, sigma):
    f = np.fft.fftfreq(a.shape[0])
    transfer = np.exp(-2 * np.pi**2 * sigma**2 * (f[:, None] ** 2 + f[None, :] ** 2))
    return np.real(np.fft.ifft2(np.fft.fft2(a) * transfer))


def phase_one(modulus, start, support, algorithms, beta, sw=None, upper=None, mask=None):
    """Returns (final support-projected object, chi2 per iteration, support)."""
    m = modulus.astype(np.float64)
    w = np.ones_like(m, dtype=bool) if mask is None else mask
    s = support.copy()
    x = np.where(s, start, 0).astype(np.complex128)
    x *= np.sqrt(((m * w) ** 2).sum() / (np.abs(x) ** 2).sum())  # measured energy
    chi2 = []
    for k, name in enumerate(algorithms):
        if sw is not None and k >= sw["start"] and (k - sw["start"]) % sw["every"] == 0:
            b = blur(np.abs(x), sw["sigma"])
            s = (b >= sw["threshold"] * b.max()) & upper
        big_f = fft(x)
        chi2.append((((np.abs(big_f) - m) * w) ** 2).sum() / ((m * w) ** 2).sum())
        projected = np.where(w, m * np.exp(1j * np.angle(big_f)), big_f)
        y = ifft(projected)
        if name == "ER":
            x = np.where(s, y, 0)
        elif name == "HIO":
            x = np.where(s, y, x - beta * y)
        elif name == "RAAR":
            # Luke 2005: beta/2 (R_S R_M + I) x + (1 - beta) P_M x
            r_m = 2 * y - x
            r_s_r_m = 2 * np.where(s, r_m, 0) - r_m
            x = beta / 2 * (r_s_r_m + x) + (1 - beta) * y
    return np.where(s, x, 0), np.array(chi2), s
