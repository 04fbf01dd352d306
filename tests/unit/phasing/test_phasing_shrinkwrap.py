"""Shrink-wrap properties: grows and shrinks, stays in the upper bound, collapse is typed."""

from __future__ import annotations

import pytest
import torch

from cdiflow.errors import ConfigError, SupportCollapsed
from cdiflow.phasing.runner import run_phasing
from cdiflow.phasing.shrinkwrap import ShrinkWrap, check_support, shrink_wrap, square_support


def _disc(radius, size=64):
    r = torch.arange(size, dtype=torch.float64) - size // 2
    return (r[:, None] ** 2 + r[None, :] ** 2 <= radius**2).to(torch.complex128)


def test_support_can_shrink_and_grow():
    upper = square_support(64, 32)
    x = _disc(6)
    new = shrink_wrap(x, upper, sigma=1.0, threshold=0.2)
    old_big = square_support(64, 30)
    old_small = _disc(3).abs() > 0
    assert new.sum() < old_big.sum()  # shrinks from a big square
    assert new.sum() > old_small.sum()  # grows from a small disc
    assert new[32, 32] and not new[32, 32 + 12]


def test_support_is_clipped_to_the_upper_bound():
    upper = square_support(64, 10)
    new = shrink_wrap(_disc(12), upper, sigma=1.0, threshold=0.1)
    assert not (new & ~upper).any()
    assert new.sum() == upper.sum()


def test_shrink_wrap_is_per_pattern_and_threshold_relative():
    x = torch.stack([_disc(4), 1000 * _disc(8)])
    new = shrink_wrap(x, square_support(64, 32), sigma=1.0, threshold=0.5)
    assert new[0].sum() < new[1].sum()
    assert 30 < new[0].sum() < 80 and 150 < new[1].sum() < 250


def test_schedule_of_updates():
    sw = ShrinkWrap()
    due = [k for k in range(600) if sw.due(k)]
    assert due[0] == 100 and due[1] == 110 and len(due) == 50


def test_bad_config_rejected():
    with pytest.raises(ConfigError):
        ShrinkWrap(threshold=1.5)
    with pytest.raises(ConfigError):
        ShrinkWrap.from_dict({"treshold": 0.1})


def test_check_support_raises_on_collapse():
    s = torch.zeros(3, 8, 8, dtype=torch.bool)
    s[0, 2:4, 2:4] = True
    s[2, 1, 1] = True
    with pytest.raises(SupportCollapsed, match=r"\[1, 2\]"):
        check_support(s, min_pixels=2)
    check_support(s[:1], min_pixels=4)


def test_runner_flags_collapse_per_pattern_and_others_go_on(exact_batch):
    obj, mod = exact_batch
    support = obj.abs() > 0
    upper = torch.stack([square_support(64, 32)] * 5 + [torch.zeros(64, 64, dtype=torch.bool)])
    sw = ShrinkWrap(start=5, every=5)
    res = run_phasing(mod, obj, support, "20*ER", shrinkwrap=sw, upper_bound=upper)
    assert res.collapsed.tolist() == [False] * 5 + [True]
    assert torch.all(res.best_chi2[:5] < 1e-6)


def test_stop_freezes_the_support_from_that_iteration_on():
    from cdiflow.phasing.segments import shifted

    sw = ShrinkWrap(start=20, every=10, stop=60)
    assert [k for k in range(100) if sw.due(k)] == [20, 30, 40, 50]
    assert [k for k in range(100) if ShrinkWrap(start=20, every=10).due(k)][-1] == 90
    # a later segment keeps the same timetable, in its own iteration numbers
    later = shifted(sw, 35)
    assert [k + 35 for k in range(65) if later.due(k)] == [40, 50]
    assert shifted(sw, 60) is None and shifted(sw, 80) is None
    with pytest.raises(ConfigError):
        ShrinkWrap(stop=-1)


@pytest.mark.parametrize("fused", [False, True])
def test_a_patterns_support_does_not_depend_on_the_pattern_blurred_beside_it(fused):
    # two patterns share one complex transform (pack_pairs): a faint one beside a bright
    # one, a zero one, and an odd batch must each cut the support they cut alone
    g = torch.Generator().manual_seed(3)
    noise = torch.randn(64, 64, dtype=torch.complex64, generator=g)
    faint, bright = 1e-6 * _disc(5).to(torch.complex64), 1e4 * (_disc(9) + 0.1 * noise)
    x = torch.stack([faint, bright, 0 * noise])
    x = x.to(torch.complex64).contiguous()
    upper = square_support(64, 32)
    together = shrink_wrap(x, upper, threshold=0.1, fused=fused)
    for b in range(3):
        alone = shrink_wrap(x[b : b + 1].contiguous(), upper, threshold=0.1, fused=fused)
        assert torch.equal(together[b], alone[0]), b
    assert together[0].sum() < together[1].sum() and not together[2].any()
