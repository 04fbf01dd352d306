"""Adaptation of the CNN to measured patterns (``cdiflow.models.adapt``), physics term only."""

from __future__ import annotations

import pytest
import torch

from cdiflow import pretrained
from cdiflow.config import ConfigError
from cdiflow.errors import InputError
from cdiflow.models import load_weights
from cdiflow.models.adapt import AdaptConfig, adapt, physics_chi2
from cdiflow.models.reconstructor import CNNReconstructor
from cdiflow.physics.farfield import PAPER
from cdiflow.physics.fft import normalise_modulus


@pytest.fixture(scope="module")
def shipped():
    model, _, _ = load_weights(pretrained.WEIGHTS)
    return model.eval()


def _particle(a: float, b: float, ky: float, kx: float, bump: float) -> torch.Tensor:
    """A smooth ellipse filling most of the 32 x 32 box (oversampling ~2.3-2.9, below the
    generator's ~4-8) with a phase ramp and a bump: unlike the training data."""
    r = torch.arange(32, dtype=torch.float32) - 16
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    amp = torch.sigmoid(8 * (1 - (yy / a) ** 2 - (xx / b) ** 2))
    phase = ky * yy + kx * xx + bump * torch.exp(-(yy**2 + xx**2) / 30)
    return amp * torch.exp(1j * phase)


@pytest.fixture(scope="module")
def unlike():
    """(3, 64, 64) max-normalised moduli of three such particles."""
    objs = torch.stack(
        [
            _particle(13, 11, 0.1, -0.05, 1.5),
            _particle(14, 9, -0.08, 0.1, -2.0),
            _particle(12, 14, 0.05, 0.05, 2.5),
        ]
    )
    return normalise_modulus(PAPER.modulus(objs))


def _snapshot(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_the_input_model_is_untouched(shipped, unlike):
    before = _snapshot(shipped)
    net, info = adapt(shipped, unlike[:1], config=AdaptConfig(steps=3))
    after = shipped.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert net is not shipped and not shipped.training
    assert not any(p.requires_grad for p in net.parameters())
    changed = [k for k, v in net.state_dict().items() if not torch.equal(v, before[k])]
    assert info.best_step > 0 and changed
    assert not any("running" in k or "num_batches" in k for k in changed)  # BN stats frozen


def test_one_scan_unlike_the_training_data_drops_substantially(shipped, unlike):
    net, info = adapt(shipped, unlike[0], config=AdaptConfig(steps=30))
    assert info.before > 0.2  # the shipped model does badly on it
    assert info.after < 0.2 * info.before
    assert info.steps == 30 and len(info.objective) == 31
    # "after" is the chi^2 every caller reports: the CNN reconstructor's, scale fitted
    rec = CNNReconstructor(net).reconstruct(unlike[:1], None, PAPER)
    torch.testing.assert_close(rec.final_chi2, info.chi2_after, rtol=1e-4, atol=1e-6)


def test_a_beamtime_adapts_once_and_chunks_do_not_change_the_gradient(shipped, unlike):
    config = AdaptConfig(steps=6, lr=1e-3)
    whole_net, whole = adapt(shipped, unlike, config=config)
    chunked_net, chunked = adapt(
        shipped, unlike, config=AdaptConfig(steps=6, lr=1e-3, batch_size=2)
    )
    assert whole.after < 0.7 * whole.before  # the mean over the beamtime is the objective
    torch.testing.assert_close(whole.objective, chunked.objective, rtol=1e-3, atol=1e-6)


def test_never_worse_than_the_input(shipped, unlike):
    # a step far too large: every step is worse, so the input weights come back
    net, info = adapt(shipped, unlike[:1], config=AdaptConfig(steps=3, lr=1.0))
    # every step worse, or diverged to NaN (where the CPU rounds differently)
    assert not (info.objective[1:] <= info.objective[0]).any()
    assert info.best_step == 0 and info.after == info.before
    ref = shipped.state_dict()
    assert all(torch.equal(v, ref[k]) for k, v in net.state_dict().items())


def test_bounded_steps_and_early_stop(shipped, unlike):
    _, none = adapt(shipped, unlike[:1], config=AdaptConfig(steps=0))
    assert none.steps == 0 and none.best_step == 0 and none.after == none.before
    _, stopped = adapt(shipped, unlike[:1], config=AdaptConfig(steps=50, lr=1.0, patience=2))
    assert stopped.steps < 50


def test_the_mask_defines_the_objective(shipped, unlike):
    mask = torch.ones(64, 64, dtype=torch.bool)
    mask[28:36, 28:36] = False  # a beamstop
    _, info = adapt(shipped, unlike[:1], mask=mask, config=AdaptConfig(steps=0))
    with torch.no_grad():
        expected = physics_chi2(shipped, unlike[:1], mask[None], PAPER)
        unmasked = physics_chi2(shipped, unlike[:1], None, PAPER)
    torch.testing.assert_close(info.chi2_before, expected)
    assert float((expected - unmasked).abs().max()) > 1e-4


def test_bad_input_is_refused(shipped):
    with pytest.raises(InputError, match="moduli"):
        adapt(shipped, torch.ones(2, 32, 32))
    with pytest.raises(InputError, match="finite"):
        adapt(shipped, torch.full((64, 64), float("nan")))
    with pytest.raises(ConfigError):
        AdaptConfig(steps=-1)
