"""refine_grouped: runs of one batch refined with their own settings."""

from __future__ import annotations

import pytest
import torch

from cdiflow.errors import InputError
from cdiflow.phasing.refine import refine
from cdiflow.phasing.refine_groups import refine_grouped
from cdiflow.phasing.settings import RefineSettings
from cdiflow.phasing.shrinkwrap import ShrinkWrap
from cdiflow.phasing.starts import random_phase_rectangle

SHORT = RefineSettings("4*ER", 0.5, None)
LONG = RefineSettings("6*HIO+3*ER", 0.9, ShrinkWrap(start=2, every=2))


def test_each_group_gets_what_refine_gives_it_and_rows_keep_their_order(exact_batch):
    _obj, modulus = exact_batch
    modulus = modulus.float()
    start = random_phase_rectangle(6, torch.Generator().manual_seed(0))
    settings = [SHORT, LONG, SHORT, LONG, LONG, SHORT]
    out = refine_grouped(modulus, start, settings)
    assert out.iterations.tolist() == [4, 9, 4, 9, 9, 4]
    assert out.result.chi2.shape == (6, 9)
    for rows, s in (([0, 2, 5], SHORT), ([1, 3, 4], LONG)):
        index = torch.tensor(rows)
        alone = refine(
            modulus[index], start.select(index), s.schedule, beta=s.beta, shrinkwrap=s.shrinkwrap
        )
        torch.testing.assert_close(out.result.obj[index], alone.obj)
        torch.testing.assert_close(out.result.best_chi2[index], alone.best_chi2)
        n = len(alone.chi2[0])
        torch.testing.assert_close(out.result.chi2[index, :n], alone.chi2)
        assert torch.isnan(out.result.chi2[index, n:]).all()  # padding of the shorter
    assert out.result.ok.all()


def test_a_bad_pattern_fails_alone_in_its_group(exact_batch):
    _obj, modulus = exact_batch
    modulus = modulus.float().clone()
    modulus[3] = float("nan")
    start = random_phase_rectangle(6, torch.Generator().manual_seed(1))
    out = refine_grouped(modulus, start, [SHORT, LONG] * 3)
    assert out.result.ok.tolist() == [True, True, True, False, True, True]


def test_lengths_must_agree(exact_batch):
    _obj, modulus = exact_batch
    start = random_phase_rectangle(6, torch.Generator().manual_seed(0))
    with pytest.raises(InputError):
        refine_grouped(modulus.float(), start, [SHORT] * 5)
