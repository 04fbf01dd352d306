"""Eq. 4: zero on ground truth, scale and global-phase invariance, exact gradients."""

from __future__ import annotations

import math

import pytest
import torch

from cdiflow.errors import ConfigError
from cdiflow.losses import LossWeights, pearson, physics_loss
from cdiflow.physics.generator import GeneratorConfig, generate_samples


def _truth(threshold: float):
    s = generate_samples(GeneratorConfig(support_threshold=threshold), 5, range(6))
    amp, phase = torch.from_numpy(s.amplitude), torch.from_numpy(s.phase)
    return torch.stack([amp, phase], 1), torch.from_numpy(s.modulus), amp, phase


def test_physics_term_is_zero_on_ground_truth():
    # A support threshold of 1e-6 keeps the true phase wherever the amplitude is not ~0,
    # so the targets describe the generator's object exactly (up to its global phase and
    # the max normalisations, to which Pearson is blind).
    pred, modulus, amp, phase = _truth(1e-6)
    terms = physics_loss(pred, modulus, amp, phase)
    assert terms["amplitude"] == 0 and terms["phase"] == 0
    assert abs(terms["physics"].item()) < 1e-6
    assert abs(terms["loss"].item()) < 1e-6


def test_default_targets_lose_little_to_the_zero_phase_outside_the_support():
    # With the default threshold (0.1) the phase target is 0 on faint edge pixels, so
    # the target object is slightly wrong there; the physics term stays small.
    pred, modulus, amp, phase = _truth(0.1)
    physics = physics_loss(pred, modulus, amp, phase)["physics"].item()
    assert 0 < physics < 0.01


def test_invariant_to_modulus_scale_and_global_phase():
    pred, modulus, amp, phase = _truth(1e-6)
    gen = torch.Generator().manual_seed(0)
    noisy = (pred + 0.05 * torch.rand(pred.shape, generator=gen)).clamp(0, 1)
    base = physics_loss(noisy, modulus, amp, phase)["physics"]
    scaled = physics_loss(noisy, 3.7 * modulus, amp, phase)["physics"]
    shifted = noisy.clone()
    shifted[:, 1] += 0.3  # a global phase of 0.6 pi
    turned = physics_loss(shifted, modulus, amp, phase)["physics"]
    torch.testing.assert_close(scaled, base, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(turned, base, atol=1e-6, rtol=1e-5)
    assert base > 1e-4  # the perturbation is seen


def test_total_is_the_weighted_mean_of_the_terms():
    pred, modulus, amp, phase = _truth(0.1)
    noisy = pred * 0.8
    w = LossWeights(amplitude=2.0, phase=0.5, physics=1.0)
    t = physics_loss(noisy, modulus, amp, phase, w)
    expected = (2 * t["amplitude"] + 0.5 * t["phase"] + t["physics"]) / 3.5
    torch.testing.assert_close(t["loss"], expected)
    # L(x) = ||0.8 x - x|| / ||x|| = 0.2 exactly
    torch.testing.assert_close(t["amplitude"], torch.tensor(0.2), atol=1e-6, rtol=0)


def test_gradient_matches_finite_differences_float64():
    gen = torch.Generator().manual_seed(1)
    n, p = 6, 12
    pred = torch.rand(2, 2, n, n, generator=gen, dtype=torch.float64).requires_grad_()
    modulus = torch.rand(2, p, p, generator=gen, dtype=torch.float64)
    amp = torch.rand(2, n, n, generator=gen, dtype=torch.float64)
    phase = torch.rand(2, n, n, generator=gen, dtype=torch.float64)

    def loss(x):
        return physics_loss(x, modulus, amp, phase)["loss"]

    assert torch.autograd.gradcheck(loss, (pred,), eps=1e-6, atol=1e-7, rtol=1e-5)


def test_pearson_of_identical_and_opposite_patterns():
    x = torch.rand(3, 8, 8, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(pearson(x, 2 * x + 1), torch.ones(3))
    torch.testing.assert_close(pearson(x, -x), -torch.ones(3))


@pytest.mark.parametrize("bad", [{"amplitude": -1.0}, {"amplitude": 0, "phase": 0, "physics": 0}])
def test_loss_weights_reject_bad_values(bad):
    with pytest.raises(ConfigError):
        LossWeights(**bad)


def test_phase_is_used_in_radians_2pi_p_minus_pi():
    from cdiflow.losses import predicted_object

    obj = predicted_object(torch.ones(1, 1), torch.full((1, 1), 0.25))
    torch.testing.assert_close(torch.angle(obj), torch.full((1, 1), -math.pi / 2))


def test_twin_has_the_same_modulus_and_twin_invariant_loss_accepts_it():
    from cdiflow.physics.farfield import twin_targets

    pred, modulus, amp, phase = _truth(1e-6)
    amp_t, phase_t = twin_targets(amp, phase)
    twin_pred = torch.stack([amp_t, phase_t], 1)
    plain = physics_loss(twin_pred, modulus, amp, phase)
    invariant = physics_loss(twin_pred, modulus, amp, phase, LossWeights(twin_invariant=True))
    assert abs(plain["physics"].item()) < 1e-5  # the twin fits the modulus as well
    assert plain["amplitude"] > 0.05 and plain["phase"] > 0.05  # but the plain loss sees it
    assert invariant["amplitude"] == 0 and invariant["phase"] == 0
    direct = physics_loss(pred, modulus, amp, phase, LossWeights(twin_invariant=True))
    assert direct["amplitude"] == 0 and direct["phase"] == 0


def test_wrapped_phase_error_counts_a_wrap_as_near_and_skips_outside():
    from cdiflow.losses import relative_error, wrapped_relative_error

    truth = torch.tensor([[[0.02, 0.5], [0.0, 0.3]]])
    across = torch.tensor([[[0.98, 0.5], [0.7, 0.3]]])  # 0.04 across the wrap; 0.7 outside
    assert wrapped_relative_error(across, truth).item() == pytest.approx(
        0.04 / truth.norm().item(), rel=1e-5
    )
    assert relative_error(across, truth).item() > 10 * wrapped_relative_error(across, truth).item()
    # the gradient takes the prediction across the line (up, to 1 = 0), not back round
    pred = across.clone().requires_grad_(True)
    wrapped_relative_error(pred, truth).backward()
    assert pred.grad[0, 0, 0].item() < 0  # descent raises p from 0.98 towards 1.02 = 0.02
    assert pred.grad[0, 1, 0].item() == 0  # outside the support: nothing


def test_phase_wrapped_loss_is_zero_on_the_truth_and_below_the_plain_one_off_by_a_turn():
    batch = generate_samples(GeneratorConfig(), 0, range(4))
    amp, phase = torch.from_numpy(batch.amplitude), torch.from_numpy(batch.phase)
    modulus = torch.from_numpy(batch.modulus)
    wrapped = LossWeights(phase_wrapped=True, twin_invariant=True)
    truth = torch.stack([amp, phase], 1)
    assert physics_loss(truth, modulus, amp, phase, wrapped)["phase"].item() == 0
    shifted = torch.stack([amp, torch.where(phase > 0, (phase + 0.9) % 1, 0.0)], 1)
    plain = physics_loss(shifted, modulus, amp, phase, LossWeights(twin_invariant=True))
    assert physics_loss(shifted, modulus, amp, phase, wrapped)["phase"] < plain["phase"]
