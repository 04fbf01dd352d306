"""Gradient refinement (``cdiflow.phasing.gradient``): loss, masks, support, batch, stopping."""

from __future__ import annotations

import math

import pytest
import torch

from cdiflow.config import ConfigError
from cdiflow.errors import InputError
from cdiflow.phasing.compare import image_errors, truth_object
from cdiflow.phasing.gradient import (
    GradientConfig,
    GradientReconstructor,
    data_loss,
    gradient_refine,
)
from cdiflow.phasing.starts import Start
from cdiflow.physics.farfield import PAPER, FarField
from cdiflow.physics.farfield import chi2 as chi2_of
from cdiflow.physics.generator import GeneratorConfig, generate_samples
from cdiflow.reconstruction import Reconstruction


@pytest.fixture(scope="module")
def samples():
    """Three generator patterns: (truth (3, 32, 32) complex, modulus (3, 64, 64))."""
    batch = generate_samples(GeneratorConfig(), seed=7, indices=[0, 1, 2])
    truth = truth_object(batch.amplitude, batch.phase)
    return truth, torch.from_numpy(batch.modulus)


def perturbed(truth: torch.Tensor, seed: int = 0, phase_rad: float = 0.6) -> torch.Tensor:
    """The truth in the 64 field with random phase and amplitude noise."""
    g = torch.Generator().manual_seed(seed)
    noise_phase = phase_rad * torch.randn(truth.shape, generator=g)
    noise_amp = 1 + 0.2 * torch.randn(truth.shape, generator=g)
    return PAPER.pad(truth * noise_amp * torch.exp(1j * noise_phase))


def test_amplitude_loss_gradient_matches_the_analytic_form(samples):
    """d/dx of sum (|Fx| - m)^2 / n is 2 F^H[(Fx - m Fx/|Fx|)] / n (Wirtinger, re + i im)."""
    truth, modulus = samples
    x = perturbed(truth).to(torch.complex128).requires_grad_(True)
    m, config = modulus.double(), GradientConfig(loss="amplitude")
    norm = (m * m).sum((-2, -1))
    loss, _ = data_loss(x, m, None, norm, PAPER, config)
    (grad,) = torch.autograd.grad(loss.sum(), x)
    with torch.no_grad():
        spectrum = PAPER.forward(x)
        residual = spectrum - m * spectrum / spectrum.abs()
        analytic = 2 * PAPER.inverse(residual) / norm[:, None, None]
    torch.testing.assert_close(grad, analytic, rtol=1e-9, atol=1e-12)


def test_poisson_loss_gradient_matches_finite_differences(samples):
    truth, modulus = samples
    x = perturbed(truth)[:1].to(torch.complex128)
    m, config = modulus[:1].double(), GradientConfig(loss="poisson")
    mask = torch.rand(64, 64, generator=torch.Generator().manual_seed(3)) > 0.2
    norm = (m * m * mask).sum((-2, -1))

    def f(z):
        return data_loss(z, m * mask, mask, norm, PAPER, config)[0].sum()

    xg = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(f(xg), xg)
    h = 1e-6
    for i, j in [(32, 32), (30, 35), (40, 28)]:
        e = torch.zeros_like(x)
        e[0, i, j] = 1
        d_re = (f(x + h * e) - f(x - h * e)) / (2 * h)
        d_im = (f(x + 1j * h * e) - f(x - 1j * h * e)) / (2 * h)
        assert float(d_re) == pytest.approx(float(grad[0, i, j].real), rel=1e-5, abs=1e-12)
        assert float(d_im) == pytest.approx(float(grad[0, i, j].imag), rel=1e-5, abs=1e-12)


@pytest.mark.parametrize("loss", ["amplitude", "poisson"])
def test_refinement_lowers_chi2_and_image_error(samples, loss):
    truth, modulus = samples
    start = perturbed(truth)
    res = gradient_refine(modulus, start, PAPER.box(), GradientConfig(steps=150, loss=loss))
    assert (res.best_chi2 < 0.1 * res.chi2[:, 0]).all()
    before = image_errors(start, truth)["amplitude"]
    after = image_errors(res.best_obj, truth)["amplitude"]
    assert (after < 0.5 * before).all()
    # the same chi^2 as the engine: eq. 5 of the kept object, no scale fitted
    direct = chi2_of(PAPER.modulus(res.best_obj), modulus)
    torch.testing.assert_close(direct, res.best_chi2, rtol=1e-4, atol=1e-7)
    assert not (res.best_obj[~PAPER.box().expand_as(res.best_obj)] != 0).any()


def test_masked_pixels_do_not_count(samples):
    truth, modulus = samples
    mask = torch.ones(64, 64, dtype=torch.bool)
    mask[30:35, :] = False  # a beam-stop stripe
    mask[:, 60:] = False
    other = modulus.clone()
    other[:, ~mask] = torch.rand(int((~mask).sum())) * 5  # junk where nothing is measured
    other[0, 31, 0] = float("nan")
    config = GradientConfig(steps=30)
    start = perturbed(truth)
    a = gradient_refine(modulus, start, PAPER.box(), config, mask=mask)
    b = gradient_refine(other, start, PAPER.box(), config, mask=mask)
    torch.testing.assert_close(a.best_obj, b.best_obj, rtol=0, atol=0)
    torch.testing.assert_close(a.chi2, b.chi2, rtol=0, atol=0)


def test_best_iterate_is_never_worse_than_the_start(samples):
    truth, _ = samples
    start = PAPER.pad(truth)  # the exact answer of its own modulus: steps only move away
    modulus = PAPER.modulus(truth)
    res = gradient_refine(modulus, start, PAPER.box(), GradientConfig(steps=10, lr=0.5))
    assert (res.final_chi2 > 1e-3).all()  # a step far too big: the last iterate is bad
    assert (res.best_chi2 <= res.chi2[:, 0]).all()
    assert (res.best_chi2 < 1e-10).all()
    torch.testing.assert_close(res.best_obj, start, rtol=1e-4, atol=1e-5)


def test_a_batch_gives_each_pattern_its_own_result(samples):
    truth, modulus = samples
    start, config = perturbed(truth), GradientConfig(steps=60, patience=5, rel_tol=0.05)
    together = gradient_refine(modulus, start, PAPER.box(), config)
    assert len(set(together.iterations.tolist())) > 1  # they stop at different steps
    for i in range(3):
        alone = gradient_refine(modulus[i : i + 1], start[i : i + 1], PAPER.box(), config)
        assert int(alone.iterations[0]) == int(together.iterations[i])
        torch.testing.assert_close(alone.best_obj[0], together.best_obj[i], rtol=1e-4, atol=1e-5)
        n = alone.chi2.shape[1]
        torch.testing.assert_close(alone.chi2[0], together.chi2[i, :n], rtol=1e-4, atol=1e-7)


def test_early_stopping_on_a_plateau(samples):
    truth, modulus = samples
    config = GradientConfig(steps=500, patience=10, rel_tol=1e-2)
    res = gradient_refine(modulus[:1], perturbed(truth)[:1], PAPER.box(), config)
    assert 10 < int(res.iterations[0]) < 500
    assert res.chi2.shape[1] == int(res.iterations[0]) + 1  # the step that saw the plateau
    never = gradient_refine(
        modulus[:1], perturbed(truth)[:1], PAPER.box(), GradientConfig(steps=40, patience=0)
    )
    assert int(never.iterations[0]) == 40


def test_any_pattern_size_and_float64():
    physics = FarField(pattern_size=128, object_size=48)
    r = torch.arange(48, dtype=torch.float64) - 24
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    truth = ((yy / 20) ** 2 + (xx / 14) ** 2 < 1) * torch.exp(0.05j * (yy + xx))
    modulus = physics.modulus(truth)[None]
    start = physics.pad(truth * torch.exp(0.3j * torch.cos(yy / 5)))[None]
    res = gradient_refine(modulus, start, physics.box(), GradientConfig(steps=40), physics=physics)
    assert res.best_obj.dtype == torch.complex128
    assert float(res.best_chi2[0]) < 0.2 * float(res.chi2[0, 0])


def test_bad_input_is_refused(samples):
    truth, modulus = samples
    start = perturbed(truth)
    with pytest.raises(InputError, match="modulus must be"):
        gradient_refine(modulus[0], start[0], PAPER.box())
    with pytest.raises(InputError, match="no pixel"):
        gradient_refine(modulus, start, torch.zeros(64, 64, dtype=torch.bool))
    with pytest.raises(InputError, match="zero on its support"):
        gradient_refine(modulus, torch.zeros_like(start), PAPER.box())
    with pytest.raises(ConfigError):
        GradientConfig(loss="l1")


def test_reconstructor_protocol(samples):
    truth, modulus = samples

    def start(moduli, physics):
        return Start(perturbed(truth), physics.box().expand(3, -1, -1), "perturbed")

    rec = GradientReconstructor(start, GradientConfig(steps=20)).reconstruct(modulus, None, PAPER)
    assert isinstance(rec, Reconstruction) and rec.amplitude.shape == (3, 32, 32)
    assert (rec.final_chi2 <= rec.chi2[:, 0]).all()
    assert math.isfinite(float(rec.final_chi2.max()))
