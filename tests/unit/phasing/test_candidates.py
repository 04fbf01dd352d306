"""refine_settings: a guess refined as several candidates, the least-chi^2 one settled."""

from __future__ import annotations

import pytest
import torch

from cdiflow.phasing.candidates import refine_settings
from cdiflow.phasing.refine import refine
from cdiflow.phasing.settings import RefineSettings
from cdiflow.phasing.shrinkwrap import ShrinkWrap
from cdiflow.phasing.starts import Start, phase_scrambled

HEAD = RefineSettings("2*(6*HIO+3*ER)", 0.5, ShrinkWrap(start=4, every=4))
CANDIDATES = HEAD.replace(candidates=3, tail="8*ER")


def _guess(obj: torch.Tensor, seed: int = 0, noise: float = 0.6) -> Start:
    """The true objects with phase noise, in a support one pixel wider than theirs."""
    g = torch.Generator().manual_seed(seed)
    noisy = obj * torch.exp(1j * noise * torch.randn(obj.shape, generator=g, dtype=obj.real.dtype))
    inside = torch.nn.functional.max_pool2d((obj.abs() > 0).float()[:, None], 3, 1, 1)[:, 0] > 0
    return Start(noisy.to(torch.complex64), inside, "cnn")


def _rngs(n: int, base: int = 7) -> list[torch.Generator]:
    return [torch.Generator().manual_seed(base + i) for i in range(n)]


def test_one_candidate_without_tail_is_refine(exact_batch):
    obj, modulus = exact_batch
    start = _guess(obj)
    got = refine_settings(modulus.float(), start, HEAD)
    want = refine(modulus.float(), start, HEAD.schedule, beta=0.5, shrinkwrap=HEAD.shrinkwrap)
    torch.testing.assert_close(got.obj, want.obj)
    torch.testing.assert_close(got.chi2, want.chi2)


def test_the_winner_is_the_least_chi2_candidate_then_its_tail(exact_batch):
    obj, modulus = exact_batch
    modulus, start = modulus.float(), _guess(obj)
    got = refine_settings(modulus, start, CANDIDATES, _rngs(6))
    # the same candidates by hand: the guess, then two random-phase copies of it
    copies = phase_scrambled(start, 2, _rngs(6))
    each = [start] + [copies.select(torch.arange(6) * 2 + j) for j in range(2)]
    runs = [refine(modulus, s, HEAD.schedule, beta=0.5, shrinkwrap=HEAD.shrinkwrap) for s in each]
    head_chi2 = torch.stack([r.best_chi2 for r in runs])
    winner = head_chi2.argmin(0)
    for i in range(6):
        picked = runs[int(winner[i])]
        torch.testing.assert_close(got.chi2[i, :18], picked.chi2[i])
        tail = refine(
            modulus[i : i + 1],
            Start(picked.obj[i : i + 1], picked.answer_support(slice(i, i + 1)), "cnn"),
            "8*ER",
            shrinkwrap=None,
        )
        torch.testing.assert_close(got.obj[i], tail.obj[0])
        torch.testing.assert_close(got.chi2[i, 18:], tail.chi2[0])
    assert got.chi2.shape == (6, CANDIDATES.iterations) and torch.isfinite(got.chi2).all()
    # ER from the winner's answer does not end above where the head left it
    assert (got.best_chi2 <= head_chi2.min(0).values * (1 + 1e-3)).all()


def test_a_patterns_answer_does_not_depend_on_its_batch(exact_batch):
    obj, modulus = exact_batch
    modulus, start, rngs = modulus.float(), _guess(obj, seed=3), _rngs(6, base=40)
    whole = refine_settings(modulus, start, CANDIDATES, rngs)
    rngs = _rngs(6, base=40)
    alone = refine_settings(modulus[4:5], start.select([4]), CANDIDATES, rngs[4:5])
    torch.testing.assert_close(whole.obj[4:5], alone.obj, atol=1e-5, rtol=1e-4)


def test_a_good_guess_wins_over_random_phases(exact_batch):
    obj, modulus = exact_batch
    exact = _guess(obj, noise=0.0)
    got = refine_settings(modulus.float(), exact, CANDIDATES, _rngs(6))
    assert (got.best_chi2 < 1e-6).all()


def test_per_pattern_masks_follow_their_candidates(exact_batch):
    obj, modulus = exact_batch
    modulus, start = modulus.float(), _guess(obj, seed=5)
    mask = torch.ones(64, 64, dtype=torch.bool)
    mask[30:34, 30:34] = False  # a beamstop
    shared = refine_settings(modulus, start, CANDIDATES, _rngs(6), mask=mask)
    per = refine_settings(modulus, start, CANDIDATES, _rngs(6), mask=mask.expand(6, 64, 64))
    torch.testing.assert_close(shared.obj, per.obj)


def test_a_bad_pattern_fails_alone_and_keeps_nan(exact_batch):
    obj, modulus = exact_batch
    modulus = modulus.float().clone()
    modulus[2] = float("nan")
    got = refine_settings(modulus, _guess(obj), CANDIDATES, _rngs(6))
    assert got.ok.tolist() == [True, True, False, True, True, True]
    assert torch.isnan(got.chi2[2]).all() and torch.isfinite(got.chi2[[0, 1, 3, 4, 5]]).all()


def test_candidates_need_generators_and_copies_keep_amplitude_and_support(exact_batch):
    obj, modulus = exact_batch
    start = _guess(obj)
    with pytest.raises(ValueError, match="generator"):
        refine_settings(modulus.float(), start, CANDIDATES)
    copies = phase_scrambled(start, 2, _rngs(6))
    assert len(copies) == 12
    torch.testing.assert_close(copies.object[1].abs(), start.object[0].abs())
    assert torch.equal(copies.support[1], start.support[0])
    assert not torch.allclose(copies.object[0], copies.object[1])  # their own phases
