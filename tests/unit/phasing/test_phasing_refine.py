"""Starts and ``refine``: the four starts, per-pattern failure isolation, typed errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cdiflow.errors import InputError, SupportCollapsed
from cdiflow.phasing.refine import BadPattern, EmptySupport, check_pattern, refine
from cdiflow.phasing.shrinkwrap import ShrinkWrap
from cdiflow.phasing.starts import (
    Start,
    cnn_start,
    nns_start,
    random_phase_cnn_support,
    random_phase_rectangle,
)
from cdiflow.physics.farfield import target_to_phase
from cdiflow.physics.fft import crop_centre

SHORT = "20*HIO+10*ER"


def _targets(obj64):
    box = crop_centre(obj64, 32)
    amp = box.abs() / box.abs().amax((-2, -1), keepdim=True)
    p = (box.angle() + math.pi) / (2 * math.pi)
    return amp.float(), torch.where(amp > 0, p, 0).float()


def test_random_rectangle_start():
    s = random_phase_rectangle(3, rng=7, rect=(20, 10))
    assert s.object.shape == (3, 64, 64) and s.support.shape == (3, 64, 64)
    assert int(s.support[0].sum()) == 200
    assert torch.all(s.object[~s.support] == 0)
    assert torch.allclose(s.object[s.support].abs(), torch.ones(600))
    again = random_phase_rectangle(3, rng=7, rect=(20, 10))
    assert torch.equal(s.object, again.object)  # seeded, no global RNG
    assert not torch.equal(s.object, random_phase_rectangle(3, rng=8, rect=(20, 10)).object)


def test_rng_must_be_passed():
    with pytest.raises(TypeError):
        random_phase_rectangle(1, rng=None)


def test_prediction_starts_convert_phase_and_binarise(exact_batch):
    obj, _ = exact_batch
    amp, p = _targets(obj)
    assert torch.allclose(
        target_to_phase(torch.tensor([0.0, 0.5, 1.0])), torch.tensor([-math.pi, 0.0, math.pi])
    )
    s = cnn_start(amp, p, threshold=0.5)
    inside = crop_centre(s.support, 32)
    assert torch.equal(inside, amp > 0.5)
    box = crop_centre(s.object, 32)
    assert torch.allclose(
        torch.exp(1j * box.angle())[inside],
        torch.exp(1j * crop_centre(obj, 32).angle())[inside].to(torch.complex64),
        atol=1e-5,
    )
    assert nns_start(amp, p).name == "nns"
    r = random_phase_cnn_support(amp, rng=1, threshold=0.5)
    assert torch.equal(r.support, s.support) and r.name == "random-cnn-support"


def test_refine_from_cnn_start_improves_chi2(exact_batch):
    obj, mod = exact_batch
    amp, p = _targets(obj)
    res = refine(mod.float(), cnn_start(amp, p), SHORT)
    assert res.ok.all()
    assert torch.all(res.best_chi2 < 1e-3)
    a, phi = res.amplitude_phase()
    assert a.shape == (6, 32, 32) and phi.shape == (6, 32, 32)


def test_one_bad_pattern_is_reported_and_the_others_complete(exact_batch):
    obj, mod = exact_batch
    patterns = [m.float().numpy() for m in mod]
    patterns[1] = patterns[1].copy()
    patterns[1][3, 3] = np.nan
    patterns[2] = -patterns[2]
    patterns[3] = patterns[3][:32]
    start = random_phase_rectangle(6, rng=3)
    support = start.support.clone()
    support[4] = False
    start = Start(start.object, support, start.name)
    res = refine(patterns, start, SHORT)
    assert res.ok.tolist() == [True, False, False, False, False, True]
    assert isinstance(res.errors[1], BadPattern) and "non-finite" in str(res.errors[1])
    assert isinstance(res.errors[2], BadPattern) and "negative" in str(res.errors[2])
    assert isinstance(res.errors[3], BadPattern) and "shape" in str(res.errors[3])
    assert isinstance(res.errors[4], EmptySupport)
    assert torch.isnan(res.best_chi2[1:5]).all()
    alone = refine(mod[[0, 5]].float(), start.select([0, 5]), SHORT)
    assert torch.allclose(alone.best_chi2, res.best_chi2[[0, 5]])
    assert torch.allclose(alone.obj, res.obj[[0, 5]])


def test_collapse_is_reported_per_pattern(exact_batch):
    _, mod = exact_batch
    start = random_phase_rectangle(6, rng=4)
    m = mod.float().clone()
    upper = torch.zeros(64, 64, dtype=torch.bool)
    upper[30:34, 30:34] = True  # 16 pixels: below min_pixels=20 -> every pattern collapses
    res = refine(
        m, start, SHORT, shrinkwrap=ShrinkWrap(start=5, every=5, min_pixels=20), upper_bound=upper
    )
    assert all(isinstance(e, SupportCollapsed) for e in res.errors)


def test_check_pattern_errors_are_input_errors():
    with pytest.raises(InputError, match="all zero"):
        check_pattern(np.zeros((64, 64), np.float32))
    with pytest.raises(BadPattern, match=r"\(64, 63\)"):
        check_pattern(np.ones((64, 63), np.float32))
    assert check_pattern(np.ones((64, 64), np.float64)).dtype == torch.float32


def test_strict_raises_the_typed_error(exact_batch):
    _, mod = exact_batch
    bad = mod.float().clone()
    bad[0, 1, 1] = float("inf")
    with pytest.raises(BadPattern, match="non-finite"):
        refine(bad[:1], random_phase_rectangle(1, rng=0), SHORT, strict=True)


def test_per_pattern_beta_follows_the_patterns_that_run(exact_batch):
    _, mod = exact_batch
    m = mod.float().clone()
    m[0] = float("nan")  # pattern 0 is dropped; betas must stay with their patterns
    start = random_phase_rectangle(6, rng=5)
    betas = [0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
    res = refine(m, start, SHORT, beta=betas)
    alone = refine(m[3:4], start.select([3]), SHORT, beta=0.8)
    assert torch.allclose(res.obj[3], alone.obj[0], atol=1e-5)


def test_per_pattern_upper_bound_follows_the_patterns_that_run(exact_batch):
    from cdiflow.phasing.shrinkwrap import square_support

    _, mod = exact_batch
    m = mod.float().clone()
    m[0] = float("nan")  # pattern 0 is dropped; upper bounds must stay with their patterns
    start = random_phase_rectangle(6, rng=6)
    sides = [24, 26, 28, 30, 32, 34]
    bounds = torch.stack([square_support(64, s) for s in sides])
    wrap = ShrinkWrap(start=5, every=5)
    res = refine(m, start, SHORT, shrinkwrap=wrap, upper_bound=bounds)
    assert res.ok.tolist() == [False, True, True, True, True, True]
    for i in range(1, 6):
        assert not (res.support[i] & ~bounds[i]).any()
    alone = refine(m[2:3], start.select([2]), SHORT, shrinkwrap=wrap, upper_bound=bounds[2])
    assert torch.allclose(res.obj[2], alone.obj[0], atol=1e-5)
