"""The fused CPU kernels (numba) against the torch path of the same loop."""

from __future__ import annotations

import math

import pytest
import torch

from cdiflow.phasing import cpu_kernels
from cdiflow.phasing.projections import COEFFICIENTS
from cdiflow.phasing.runner import _State, fused_kernels, run_phasing
from cdiflow.phasing.shrinkwrap import ShrinkWrap, square_support
from cdiflow.physics.farfield import chi2, project_modulus
from cdiflow.physics.fft import centred_fft2, normalise_modulus, pad_centre
from conftest import synthetic_objects

pytestmark = pytest.mark.skipif(not cpu_kernels.available(), reason="numba not installed")

TOL = {torch.float32: dict(rtol=1e-5, atol=1e-6), torch.float64: dict(rtol=1e-10, atol=1e-12)}


def _problem(batch: int, seed: int, dtype, size: int = 64):
    obj = pad_centre(synthetic_objects(batch, seed=seed, size=size // 2), size)
    mod = normalise_modulus(centred_fft2(obj).abs()).to(dtype)
    g = torch.Generator().manual_seed(seed + 7)
    start = torch.exp(2j * math.pi * torch.rand(mod.shape, generator=g, dtype=torch.float64))
    return mod, start, square_support(size, size // 2)


def _mask(size: int = 64) -> torch.Tensor:
    mask = torch.ones(size, size, dtype=torch.bool)
    mask[size // 2 - 3 : size // 2 + 3, size // 2 - 3 : size // 2 + 3] = False  # a beamstop
    mask[:, 10] = False  # a detector gap
    return mask


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("masked", [False, True])
def test_the_fused_fourier_step_is_the_physics_projection(dtype, masked):
    mod, start, upper = _problem(3, 1, dtype)
    mask = _mask() if masked else None
    fused = _State.prepare(mod, start, upper, mask, None, 0.9, None, fused=True)
    x = fused.x.clone()
    y, err = fused.fourier(x, with_chi2=True)
    want, mag = project_modulus(torch.fft.fft2(x, norm="ortho"), fused.m, fused.w)
    assert torch.allclose(y, torch.fft.ifft2(want, norm="ortho"), **TOL[dtype])
    assert torch.allclose(err, chi2(mag, fused.m, fused.w, norm=fused.norm), **TOL[dtype])
    assert torch.equal(x, fused.x)  # read, never written
    assert fused.fourier(x, with_chi2=False)[1] is None


@pytest.mark.parametrize("name", ["ER", "HIO", "RAAR"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_the_fused_update_is_the_affine_update_of_each_algorithm(name, dtype):
    mod, start, _ = _problem(3, 2, dtype)
    g = torch.Generator().manual_seed(5)
    support = torch.rand(3, 64, 64, generator=g) > 0.6  # any support, per pattern
    beta = torch.tensor([0.9, 0.7, 0.5], dtype=dtype)  # one beta per pattern
    states = [_State.prepare(mod, start, support, None, None, beta, None, f) for f in (0, 1)]
    plain, fused = states
    x = plain.x.clone()
    y = torch.fft.ifft2(torch.fft.fft2(x), norm="ortho")  # any y
    want = plain.update(plain.coefficients({name})[name], x, y.clone())
    got = fused.update(fused.coefficients({name})[name], x, y.clone())
    assert torch.allclose(got, want, **TOL[dtype])
    # and by the definition: y inside the support; HIO's x - beta y outside
    if name == "HIO":  # (the state holds x and its support in the FFT's unshifted layout)
        outside = x - beta[:, None, None] * y
        assert torch.allclose(got, torch.where(plain.s, y, outside), **TOL[dtype])
    assert torch.equal(x, plain.x)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("masked", [False, True])
def test_a_short_run_gives_the_same_iterates_on_both_paths(dtype, masked):
    """Every algorithm, shrink-wrap and masks: iterate for iterate, to rounding. HIO
    amplifies rounding (float32's 1e-7 grows to ~1e-4 in these 22 iterations, on either
    path alone for a 1e-7 change of the start), so float64 is the tight check; long runs
    part altogether (a 1e-15 change of the start does it in a few hundred iterations) and
    are compared by their statistics below."""
    tol = dict(rtol=1e-3, atol=1e-3) if dtype == torch.float32 else dict(rtol=1e-8, atol=1e-10)
    mod, start, upper = _problem(4, 3, dtype)
    text = "2*(6*HIO+3*ER)+3*RAAR+2*ER"
    kw = dict(
        shrinkwrap=ShrinkWrap(start=3, every=4), upper_bound=upper, beta=0.8,
        mask=_mask() if masked else None,
    )  # fmt: skip
    plain = run_phasing(mod, start, upper, text, kernels="torch", **kw)
    fused = run_phasing(mod, start, upper, text, kernels="numba", **kw)
    assert torch.equal(plain.support, fused.support)
    assert torch.allclose(fused.obj, plain.obj, **tol)
    assert torch.allclose(fused.chi2.double(), plain.chi2.double(), rtol=tol["rtol"])
    assert torch.allclose(fused.best_chi2.double(), plain.best_chi2.double(), rtol=tol["rtol"])


def test_long_runs_on_both_paths_reach_the_same_quality():
    """The paper's 600 iterations on 12 patterns: the median best chi^2 of the two paths
    agree within the spread that a rounding-level change of the start gives."""
    mod, start, upper = _problem(12, 4, torch.float32)
    kw = dict(shrinkwrap=ShrinkWrap(), upper_bound=upper)
    plain = run_phasing(mod, start, upper, "5*(100*HIO+20*ER)", kernels="torch", **kw)
    fused = run_phasing(mod, start, upper, "5*(100*HIO+20*ER)", kernels="numba", **kw)
    ratio = float(fused.best_chi2.median() / plain.best_chi2.median())
    assert 0.5 < ratio < 2.0, ratio
    # both refine: far below the start's chi^2
    assert (fused.best_chi2 < 0.1 * fused.chi2[:, 0]).all()


def test_threads_split_the_fused_batch_without_changing_it():
    mod, start, upper = _problem(4, 5, torch.float32)
    kw = dict(shrinkwrap=ShrinkWrap(start=2, every=3), upper_bound=upper, kernels="numba")
    one = run_phasing(mod, start, upper, "4*HIO+3*ER", threads=1, **kw)
    two = run_phasing(mod, start, upper, "4*HIO+3*ER", threads=2, **kw)
    assert torch.allclose(one.obj, two.obj, rtol=1e-5, atol=1e-6)
    assert torch.equal(one.support, two.support)


def test_kernels_are_chosen_by_name_and_a_bad_name_is_a_clear_error():
    cpu = torch.ones(1, 8, 8)
    assert fused_kernels("auto", cpu) and fused_kernels("numba", cpu)
    assert not fused_kernels("torch", cpu)
    with pytest.raises(ValueError, match="kernels must be"):
        run_phasing(cpu, cpu, torch.ones(8, 8, dtype=torch.bool), "ER", kernels="fast")


def test_the_coefficient_pairs_come_from_the_projections_table():
    beta = torch.tensor([0.9, 0.5]).reshape(2, 1, 1)
    support = torch.zeros(2, 4, 4, dtype=torch.bool)
    support[:, 1, 1] = True
    for name, fn in COEFFICIENTS.items():
        reals = cpu_kernels.FusedSteps.support_bytes(support)
        quad, s = cpu_kernels.FusedSteps.coefficients(fn, reals, beta)
        a, c = fn(support, beta, torch.float32)
        a = torch.zeros_like(c) if a is None else a.expand_as(c)
        for b in range(2):  # (a_out, a_in, c_out, c_in) are a and c off and on the support
            assert quad[b, 0] == a[b, 0, 0] and quad[b, 1] == a[b, 1, 1], name
            assert quad[b, 2] == c[b, 0, 0] and quad[b, 3] == c[b, 1, 1], name
        assert s.shape == (2, 16) and s.sum() == 2


@pytest.mark.parametrize("per_pattern_bound", [False, True])
def test_the_fused_shrink_wrap_cuts_the_same_support(per_pattern_bound):
    from cdiflow.phasing.shrinkwrap import gaussian_transfer, pack_pairs, shrink_wrap

    g = torch.Generator().manual_seed(9)
    x = torch.randn(4, 64, 64, dtype=torch.complex64, generator=g)
    x[2] = 0  # no peak: an empty support, as torch's cut gives
    upper = square_support(64, 40)
    if per_pattern_bound:
        upper = upper.expand(4, 64, 64).clone()
        upper[1, :, :32] = False
    transfer = gaussian_transfer(64, 1.0)
    want = shrink_wrap(x, upper, threshold=0.3, transfer=transfer)
    got = shrink_wrap(x, upper, threshold=0.3, transfer=transfer, fused=True)
    assert got.dtype == torch.bool and got.shape == want.shape
    assert torch.equal(got, want)
    assert not got[2].any() and got[0].any()
    packed, peak = cpu_kernels.magnitude_pairs(x)
    want_packed, want_peak = pack_pairs(x.abs())
    assert torch.allclose(packed, want_packed, rtol=1e-6, atol=0)
    assert torch.equal(peak, want_peak)
