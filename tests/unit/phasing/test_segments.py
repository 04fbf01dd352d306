"""Mixed schedules: projections and ADAM steps, segment by segment."""

from __future__ import annotations

import pytest
import torch

from cdiflow.errors import InputError
from cdiflow.phasing.refine import refine
from cdiflow.phasing.schedule import parse
from cdiflow.phasing.segments import shifted, split
from cdiflow.phasing.shrinkwrap import ShrinkWrap
from cdiflow.phasing.starts import random_phase_rectangle


def test_split_cuts_at_every_change_of_kind():
    segments = split("2*(3*HIO+2*ER)+4*ADAM+2*ER")
    assert [(s.first, len(s), s.gradient) for s in segments] == [
        (0, 10, False),
        (10, 4, True),
        (14, 2, False),
    ]
    assert str(segments[0].schedule) == "3*HIO+2*ER+3*HIO+2*ER"
    assert [len(s) for s in split("5*ER")] == [5]


@pytest.mark.parametrize("start,every", [(0, 1), (3, 4), (100, 10), (20, 7)])
@pytest.mark.parametrize("offset", [0, 1, 5, 19, 20, 21, 133])
def test_a_shifted_timetable_updates_when_the_whole_schedule_would(start, every, offset):
    whole = ShrinkWrap(start=start, every=every)
    local = shifted(whole, offset)
    assert [local.due(k) for k in range(200)] == [whole.due(offset + k) for k in range(200)]


def test_gradient_steps_after_er_lower_chi2_and_the_curve_covers_every_iteration(exact_batch):
    _obj, modulus = exact_batch
    modulus = modulus.float()
    start = random_phase_rectangle(6, torch.Generator().manual_seed(0))
    er = refine(modulus, start, "30*ER", shrinkwrap=None)
    mixed = refine(modulus, start, "30*ER+40*ADAM", shrinkwrap=None)
    assert mixed.chi2.shape == (6, 70)
    torch.testing.assert_close(mixed.chi2[:, :30], er.chi2)  # the same first segment
    assert torch.all(mixed.best_chi2 <= er.best_chi2 * (1 + 1e-6))
    assert torch.median(mixed.best_chi2 / er.best_chi2) < 0.9
    assert mixed.ok.all()


def test_a_mixed_schedule_with_shrinkwrap_and_projections_after_adam_runs(exact_batch):
    _obj, modulus = exact_batch
    start = random_phase_rectangle(6, torch.Generator().manual_seed(2))
    res = refine(modulus.float(), start, "10*HIO+5*ADAM+10*ER", shrinkwrap=ShrinkWrap(start=5))
    assert res.chi2.shape == (6, 25) and torch.isfinite(res.best_chi2).all()
    assert len(parse("10*HIO+5*ADAM+10*ER")) == 25


def test_snapshots_need_projections_only(exact_batch):
    _obj, modulus = exact_batch
    start = random_phase_rectangle(6, torch.Generator().manual_seed(0))
    with pytest.raises(InputError):
        refine(modulus.float(), start, "5*ER+5*ADAM", shrinkwrap=None, snapshots=(3,), strict=True)


def test_refine_with_engine_threads_gives_what_one_thread_gives(exact_batch):
    _obj, modulus = exact_batch
    start = random_phase_rectangle(6, torch.Generator().manual_seed(3))
    one = refine(modulus.float(), start, "10*HIO+5*ER", shrinkwrap=None)
    split_ = refine(modulus.float(), start, "10*HIO+5*ER", shrinkwrap=None, threads=2)
    torch.testing.assert_close(split_.obj, one.obj, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(split_.best_chi2, one.best_chi2, rtol=1e-4, atol=1e-7)
