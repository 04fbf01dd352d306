"""The batched torch runner against the numpy oracle, convergence, chi^2 and masks."""

from __future__ import annotations

import numpy as np
import torch
from phasing_numpy_oracle import phase_one

from cdiflow.metrics import chi2 as metric_chi2
from cdiflow.phasing.runner import run_phasing
from cdiflow.phasing.schedule import parse
from cdiflow.phasing.shrinkwrap import ShrinkWrap, square_support
from cdiflow.physics.fft import centred_fft2


def _random_start(shape, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.exp(2j * np.pi * torch.rand(shape, generator=g, dtype=torch.float64))


def test_batched_torch_equals_numpy_oracle(exact_batch):
    obj, mod = exact_batch
    upper = square_support(64, 32)
    start = _random_start(mod.shape, 1)
    betas = torch.tensor([0.9, 0.7, 0.8, 0.9, 0.6, 0.75], dtype=torch.float64)
    text = "2*(15*HIO+5*ER)+4*RAAR+6*ER"
    sw = ShrinkWrap(start=12, every=6, sigma=1.0, threshold=0.1)
    mask = torch.ones(64, 64, dtype=torch.bool)
    mask[30:34, 30:34] = False
    res = run_phasing(
        mod, start, upper, text, beta=betas, shrinkwrap=sw, upper_bound=upper, mask=mask
    )
    algorithms = parse(text).expand()
    sw_dict = {"start": 12, "every": 6, "sigma": 1.0, "threshold": 0.1}
    for i in range(mod.shape[0]):
        x, chi2, s = phase_one(
            mod[i].numpy(),
            start[i].numpy(),
            upper.numpy(),
            algorithms,
            float(betas[i]),
            sw_dict,
            upper.numpy(),
            mask.numpy(),
        )
        np.testing.assert_array_equal(res.support[i].numpy(), s)
        np.testing.assert_allclose(res.obj[i].numpy(), x, atol=1e-9)
        np.testing.assert_allclose(res.chi2[i].numpy(), chi2, rtol=1e-5, atol=1e-9)


def test_er_with_true_support_converges_on_exact_pattern(exact_batch):
    obj, mod = exact_batch
    support = obj.abs() > 0
    g = torch.Generator().manual_seed(2)
    noise = 0.05 * torch.randn(obj.shape, generator=g, dtype=torch.float64)
    start = (obj * torch.exp(1j * noise)).to(torch.complex64)  # a perturbed truth
    res = run_phasing(mod.float(), start, support, "300*ER")
    assert torch.all(res.best_chi2 < 1e-6), res.best_chi2
    # Fienup: the ER error never increases
    steps = res.chi2[:, 1:] - res.chi2[:, :-1]
    assert torch.all(steps <= 1e-7 + 1e-4 * res.chi2[:, :-1])


def test_recorded_chi2_is_eq5_of_the_iterates(exact_batch):
    obj, mod = exact_batch
    support = obj.abs() > 0
    res = run_phasing(mod, _random_start(mod.shape, 3), support, "30*HIO+10*ER")
    final = metric_chi2(centred_fft2(res.obj).abs(), mod)
    assert torch.allclose(res.final_chi2, final.float(), rtol=1e-5)
    best = metric_chi2(centred_fft2(res.best_obj).abs(), mod)
    assert torch.allclose(res.best_chi2, best.float(), rtol=1e-5)
    assert torch.all(res.best_chi2 <= res.final_chi2)
    assert res.chi2.shape == (6, 40) and torch.isfinite(res.chi2).all()


def test_unmeasured_pixels_do_not_matter(exact_batch):
    obj, mod = exact_batch
    support = obj.abs() > 0
    mask = torch.ones(64, 64, dtype=torch.bool)
    mask[28:36, 28:36] = False  # a beamstop over the central peak
    garbage = mod.clone()
    garbage[:, ~mask] = 123.0
    start = _random_start(mod.shape, 4)
    a = run_phasing(mod, start, support, "20*HIO+20*ER", mask=mask)
    b = run_phasing(garbage, start, support, "20*HIO+20*ER", mask=mask)
    assert torch.allclose(a.obj, b.obj) and torch.allclose(a.chi2, b.chi2)
    c = run_phasing(garbage, start, support, "20*HIO+20*ER")
    assert not torch.allclose(a.obj, c.obj)


def test_batch_equals_one_at_a_time(exact_batch):
    obj, mod = exact_batch
    upper = square_support(64, 32)
    start = _random_start(mod.shape, 5).to(torch.complex64)
    sw = ShrinkWrap(start=10, every=10)
    betas = torch.linspace(0.6, 0.9, 6)
    batch = run_phasing(
        mod.float(), start, upper, "40*HIO+10*ER", beta=betas, shrinkwrap=sw, upper_bound=upper
    )
    for i in (0, 5):
        one = run_phasing(
            mod[i : i + 1].float(),
            start[i : i + 1],
            upper,
            "40*HIO+10*ER",
            beta=float(betas[i]),
            shrinkwrap=sw,
            upper_bound=upper,
        )
        assert torch.allclose(one.obj[0], batch.obj[i], atol=1e-5)


def test_the_answer_lies_in_the_final_support_or_is_the_start(exact_batch):
    obj, mod = exact_batch
    upper = square_support(64, 40)
    start = _random_start(mod.shape, 3)
    text = "60*HIO+20*ER+40*HIO+20*ER"
    sw = ShrinkWrap(start=20, every=10)
    res = run_phasing(mod, start, upper, text, beta=0.9, shrinkwrap=sw, upper_bound=upper)
    answer = res.best_obj != 0
    in_final = (answer & ~res.support).flatten(1).sum(1) == 0
    # chosen among the iterates after the last support update: the final ER run's
    last_update = max(k for k in range(140) if sw.due(k))
    tail = res.chi2[:, last_update + 1 :]
    assert in_final.all()
    assert torch.allclose(res.best_chi2, torch.minimum(tail.min(1).values, res.final_chi2))
    # without the rule an earlier iterate in a looser support would have been lower
    assert (res.chi2[:, :last_update].min(1).values < res.best_chi2).any()


def test_a_start_better_than_every_refined_iterate_is_the_answer(exact_batch):
    obj, mod = exact_batch
    support = obj.abs() > 0
    # a near-truth start, then a shrink-wrap far too tight (only the brightest pixels
    # survive): every later iterate fits worse than the start
    g = torch.Generator().manual_seed(0)
    start = obj * torch.exp(0.05j * torch.randn(obj.shape, generator=g, dtype=torch.float64))
    res = run_phasing(
        mod, start, support, "10*HIO+10*ER", beta=0.9,
        shrinkwrap=ShrinkWrap(start=2, every=2, threshold=0.8, min_pixels=1),
    )  # fmt: skip
    assert (res.final_chi2 > res.chi2[:, 0]).all()
    torch.testing.assert_close(res.best_chi2, res.chi2[:, 0].to(res.best_chi2.dtype))
    assert torch.equal(res.best_obj != 0, support)
