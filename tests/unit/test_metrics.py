"""chi^2 (paper eq. 5), real-space errors, and the ambiguity-aware alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdiflow.metrics import align, aligned_errors, chi2, image_error, twin
from cdiflow.physics.fft import object_modulus, pad_centre


def _object(seed: int, n: int = 32, support: int = 14) -> torch.Tensor:
    """A smooth-ish random complex object in a centred square support, complex128."""
    gen = torch.Generator().manual_seed(seed)
    obj = torch.zeros((n, n), dtype=torch.complex128)
    amp = 0.3 + torch.rand((support, support), generator=gen, dtype=torch.float64)
    phase = 2.5 * torch.rand((support, support), generator=gen, dtype=torch.float64) - 1.25
    s = slice(n // 2 - support // 2, n // 2 + support // 2)
    obj[s, s] = torch.polar(amp, phase)
    return obj


def _moduli(seed: int, count: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    shape = (count, 64, 64)
    return (torch.rand(shape, generator=gen, dtype=torch.float64) for _ in range(2))


def test_chi2_is_eq5():
    p, g = _moduli(0)
    expected = ((p - g) ** 2).sum((1, 2)) / (g**2).sum((1, 2))
    torch.testing.assert_close(chi2(p, g), expected)
    assert chi2(p, g).shape == (3,)


def test_chi2_is_zero_on_identical_inputs():
    _, g = _moduli(1)
    assert torch.all(chi2(g, g) == 0) and torch.all(chi2(g, g, fit_scale=True) < 1e-28)


def test_fit_scale_makes_chi2_scale_invariant():
    p, g = _moduli(2)
    assert torch.allclose(chi2(3 * g, g), torch.full((3,), 4.0, dtype=torch.float64))
    assert torch.all(chi2(3 * g, g, fit_scale=True) < 1e-28)
    for scale in (1e-3, 0.5, 7.0):
        torch.testing.assert_close(
            chi2(scale * p, g, fit_scale=True), chi2(p, g, fit_scale=True), rtol=1e-12, atol=0
        )
    assert torch.all(chi2(p, g, fit_scale=True) <= chi2(p, g))  # the best scale beats 1


def test_masked_pixels_are_ignored():
    p, g = _moduli(3)
    mask = torch.ones((64, 64), dtype=torch.bool)
    mask[30:34, :] = False
    changed = p.clone()
    changed[:, ~mask] = 100.0  # garbage where nothing is measured
    for fit in (False, True):
        torch.testing.assert_close(chi2(changed, g, mask, fit), chi2(p, g, mask, fit))
        assert not torch.allclose(chi2(changed, g, fit_scale=fit), chi2(p, g, fit_scale=fit))
        torch.testing.assert_close(chi2(p, g, torch.ones_like(mask), fit), chi2(p, g, None, fit))
    expected = ((p - g) ** 2)[:, mask].sum(1) / (g**2)[:, mask].sum(1)
    torch.testing.assert_close(chi2(p, g, mask), expected)


def test_image_error():
    _, g = _moduli(4)
    assert torch.all(image_error(g, g) == 0)
    torch.testing.assert_close(image_error(1.1 * g, g), torch.full((3,), 0.01, dtype=g.dtype))


@pytest.mark.parametrize("use_twin", [False, True])
@pytest.mark.parametrize("shift", [(0, 0), (3, -4), (-6, 2)])
def test_align_removes_phase_shift_and_twin(use_twin, shift):
    truth = _object(5)
    moved = torch.roll(truth, shifts=shift, dims=(-2, -1)) * np.exp(1j * 2.1)
    predicted = twin(moved) if use_twin else moved
    # It is the same object as far as the measurement goes ...
    torch.testing.assert_close(object_modulus(predicted, 64), object_modulus(truth, 64))
    # ... and alignment recovers it.
    torch.testing.assert_close(align(predicted, truth), truth, rtol=0, atol=1e-10)
    errors = aligned_errors(predicted, truth)
    assert errors["amplitude"] < 1e-20 and errors["phase_rms"] < 1e-10
    assert image_error(predicted.abs(), truth.abs()) > 0.1 or shift == (0, 0)


def test_align_keeps_batch_shape():
    truth = torch.stack([_object(6), _object(7)])
    predicted = torch.stack([twin(truth[0]), truth[1] * 1j])
    aligned = align(predicted, truth)
    assert aligned.shape == truth.shape
    torch.testing.assert_close(aligned, truth, rtol=0, atol=1e-10)


def test_aligned_errors_grow_when_the_object_differs():
    truth, other = _object(8), _object(9)
    previous = {"amplitude": -1.0, "phase_rms": -1.0}
    for weight in (0.05, 0.2, 0.5):
        predicted = twin((1 - weight) * truth + weight * other) * 1j
        errors = aligned_errors(predicted, truth)
        for key in previous:
            assert errors[key].item() > max(previous[key], 1e-6)
            previous[key] = errors[key].item()


@pytest.mark.parametrize("fit_scale", [False, True])
def test_chi2_gradient_matches_finite_differences(fit_scale):
    obj = _object(10, n=16, support=8)
    measured = object_modulus(_object(11, n=16, support=8), 32)
    mask = torch.ones((32, 32), dtype=torch.bool)
    mask[15:18, 15:18] = False

    def loss(x):
        return chi2(object_modulus(x, 32), measured, mask, fit_scale).sum()

    x = obj.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(loss(x), x)
    gen = torch.Generator().manual_seed(12)
    h = 1e-6
    for _ in range(4):
        direction = torch.randn(obj.shape, generator=gen, dtype=torch.complex128)
        numeric = (loss(obj + h * direction) - loss(obj - h * direction)) / (2 * h)
        # torch's gradient of a real loss is dL/dRe + i dL/dIm: pair it with Re(conj(g) d).
        analytic = (grad.conj() * direction).real.sum()
        assert analytic.item() == pytest.approx(numeric.item(), rel=1e-6, abs=1e-10)


def test_twin_is_an_involution_with_the_same_modulus():
    obj = _object(13)
    torch.testing.assert_close(twin(twin(obj)), obj, rtol=0, atol=0)
    torch.testing.assert_close(object_modulus(twin(obj), 64), object_modulus(obj, 64))
    field = pad_centre(obj, 64)
    assert twin(field)[32, 32] == field[32, 32].conj()  # the centre is the inversion point
