"""Golden-formula tests of the pure projections and of the Fourier magnitude projection."""

from __future__ import annotations

import torch

from cdiflow.phasing.projections import PROJECTIONS, er, fourier_magnitude_projection, hio, raar


def _xys(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2, 8, 8, dtype=torch.complex128, generator=g)
    y = torch.randn(2, 8, 8, dtype=torch.complex128, generator=g)
    s = torch.rand(2, 8, 8, generator=g, dtype=torch.float64) > 0.5
    return x, y, s


def test_er_is_support_projection_of_fourier_projection():
    x, y, s = _xys()
    out = er(x, y, s)
    assert torch.equal(out[s], y[s])
    assert torch.all(out[~s] == 0)


def test_hio_golden_formula():
    x, y, s = _xys(1)
    beta = 0.9
    out = hio(x, y, s, beta)
    assert torch.allclose(out[s], y[s])
    assert torch.allclose(out[~s], x[~s] - beta * y[~s])


def test_raar_matches_lukes_reflector_form():
    x, y, s = _xys(2)
    beta = 0.75
    r_m = 2 * y - x  # R_M x = 2 P_M x - x
    r_s_r_m = 2 * torch.where(s, r_m, 0) - r_m  # R_S = 2 P_S - I
    luke = beta / 2 * (r_s_r_m + x) + (1 - beta) * y
    assert torch.allclose(raar(x, y, s, beta), luke, atol=1e-12)
    # and it differs from cohere-core's variant inside the support
    cohere = beta * (torch.where(s, y, 0) + x) + (1 - 2 * beta) * y
    assert not torch.allclose(luke[s], cohere[s])
    assert torch.allclose(luke[~s], cohere[~s])


def test_per_pattern_beta_broadcasts():
    x, y, s = _xys(3)
    beta = torch.tensor([0.5, 0.9], dtype=torch.float64).reshape(2, 1, 1)
    out = hio(x, y, s, beta)
    assert torch.allclose(out[1], hio(x[1], y[1], s[1], 0.9))
    assert torch.allclose(out[0], hio(x[0], y[0], s[0], 0.5))


def test_schedule_names_map_to_projections():
    assert set(PROJECTIONS) == {"ER", "HIO", "RAAR"}


def test_fourier_projection_sets_modulus_keeps_phase():
    g = torch.Generator().manual_seed(4)
    spec = torch.randn(3, 16, 16, dtype=torch.complex128, generator=g)
    mod = torch.rand(3, 16, 16, dtype=torch.float64, generator=g)
    out, mag = fourier_magnitude_projection(spec, mod)
    assert torch.allclose(out.abs(), mod)
    assert torch.allclose(torch.angle(out), torch.angle(spec))
    assert torch.allclose(mag, spec.abs())


def test_fourier_projection_leaves_unmeasured_pixels_free():
    g = torch.Generator().manual_seed(5)
    spec = torch.randn(2, 16, 16, dtype=torch.complex128, generator=g)
    mod = torch.rand(2, 16, 16, dtype=torch.float64, generator=g)
    mask = torch.ones(2, 16, 16, dtype=torch.bool)
    mask[:, 6:10, 6:10] = False  # a beamstop
    mask[:, :, 3] = False  # a detector gap
    out, _ = fourier_magnitude_projection(spec, mod, mask)
    assert torch.equal(out[~mask], spec[~mask])
    assert torch.allclose(out[mask].abs(), mod[mask])
