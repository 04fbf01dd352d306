"""Properties of the physics object: invariances, round trips, projection, gradients."""

from __future__ import annotations

import math

import pytest
import torch

from cdiflow.config import ConfigError
from cdiflow.physics.farfield import PAPER, FarField, chi2, magnitude, project_modulus

SIZES = [(64, 32), (128, 40), (33, 11)]


def _object(n: int, seed: int, dtype=torch.complex64) -> torch.Tensor:
    """Random complex objects; the first row and column are empty, as a particle's are:
    point inversion about N // 2 maps index 0 outside the box for even N."""
    g = torch.Generator().manual_seed(seed)
    amp = torch.rand(3, n, n, generator=g)
    amp[:, 0, :] = 0
    amp[:, :, 0] = 0
    phase = (torch.rand(3, n, n, generator=g) * 2 - 1) * math.pi
    return torch.polar(amp, phase).to(dtype)


@pytest.mark.parametrize(("p", "n"), SIZES)
def test_modulus_invariant_to_global_phase_shift_and_twin(p, n):
    physics = FarField(p, n)
    obj = _object(n, 0)
    ref = physics.modulus(obj)
    field = physics.pad(obj)
    shifted = torch.roll(field, shifts=(3, -5), dims=(-2, -1))  # stays inside P x P
    assert torch.allclose(physics.forward(field).abs(), ref, atol=1e-5)
    assert torch.allclose(physics.forward(shifted).abs(), ref, atol=1e-5)
    assert torch.allclose(
        physics.modulus(obj * complex(math.cos(1.0), math.sin(1.0))), ref, atol=1e-5
    )
    assert torch.allclose(physics.modulus(physics.twin(obj)), ref, atol=1e-5)
    assert not torch.allclose(physics.twin(obj), obj)


@pytest.mark.parametrize(("p", "n"), SIZES)
def test_forward_inverse_round_trip_and_parseval(p, n):
    physics = FarField(p, n)
    obj = _object(n, 1, torch.complex128)
    spectrum = physics.forward(obj)
    assert torch.allclose(physics.inverse(spectrum), physics.pad(obj), atol=1e-12)
    assert torch.allclose((spectrum.abs() ** 2).sum((-2, -1)), (obj.abs() ** 2).sum((-2, -1)))
    assert torch.allclose(physics.crop(physics.pad(obj)), obj)


def test_phase_target_round_trip_and_twin_targets():
    g = torch.Generator().manual_seed(2)
    phase = (torch.rand(4, 32, 32, generator=g) * 2 - 1) * math.pi * 0.999
    support = torch.rand(4, 32, 32, generator=g) > 0.3
    target = PAPER.phase_to_target(phase, support)
    assert ((target >= 0) & (target < 1)).all()
    assert (target[~support] == 0).all()
    back = PAPER.target_to_phase(target)
    assert torch.allclose(back[support], phase[support], atol=1e-5)
    # the twin's targets are the targets of the twin object
    amp = torch.rand(4, 32, 32, generator=g) * support
    obj = PAPER.object_from_targets(amp, target)
    twin_amp, twin_target = PAPER.twin_targets(amp, target)
    twin_obj = PAPER.object_from_targets(twin_amp, twin_target)
    assert torch.allclose(twin_obj, PAPER.twin(obj), atol=1e-5)


def test_chi2_masked_scale_fit_and_zero_at_truth():
    g = torch.Generator().manual_seed(3)
    measured = torch.rand(5, 64, 64, generator=g)
    mask = torch.rand(5, 64, 64, generator=g) > 0.2
    assert torch.allclose(chi2(measured, measured, mask), torch.zeros(5))
    assert torch.allclose(
        chi2(3.0 * measured, measured, mask, fit_scale=True), torch.zeros(5), atol=1e-6
    )
    predicted = measured + 0.1 * torch.rand(5, 64, 64, generator=g)
    w = mask.float()
    expected = (((predicted - measured) * w) ** 2).sum((-2, -1)) / ((measured * w) ** 2).sum(
        (-2, -1)
    )
    assert torch.allclose(chi2(predicted, measured, mask), expected, rtol=1e-5)
    # pixels outside the mask never count
    spoiled = torch.where(mask, predicted, 1e6)
    assert torch.allclose(chi2(spoiled, measured, mask), expected, rtol=1e-5)


def test_projection_sets_measured_magnitude_and_keeps_unmeasured_pixels():
    spectrum = PAPER.forward(_object(32, 4))
    measured = torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(5))
    mask = torch.ones(64, 64, dtype=torch.bool)
    mask[28:36, 28:36] = False  # a beamstop
    projected, mag = project_modulus(spectrum, measured, mask)
    assert torch.allclose(mag, spectrum.abs(), atol=1e-6)
    assert torch.allclose(projected.abs()[:, mask], measured[:, mask], atol=1e-5)
    assert torch.equal(projected[:, ~mask], spectrum[:, ~mask])
    assert torch.allclose(
        torch.angle(projected[:, mask]), torch.angle(spectrum[:, mask]), atol=1e-4
    )
    again, _ = project_modulus(projected, measured, mask)  # a projection is idempotent
    assert torch.allclose(again, projected, atol=1e-5)
    inplace, _ = project_modulus(spectrum.clone(), measured, mask, inplace=True)
    assert torch.allclose(inplace, projected)


def test_modulus_gradient_matches_finite_differences():
    physics = FarField(16, 8)

    def modulus_sum(amp, target):
        return physics.modulus_of_targets(amp, target).sum()

    g = torch.Generator().manual_seed(6)
    amp = (torch.rand(1, 8, 8, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    target = (torch.rand(1, 8, 8, generator=g, dtype=torch.float64) * 0.8 + 0.1).requires_grad_()
    assert torch.autograd.gradcheck(modulus_sum, (amp, target))


def test_magnitude_equals_abs_on_every_dtype():
    z = _object(32, 7)
    assert torch.allclose(magnitude(z.clone()), z.abs(), atol=1e-6)
    assert torch.equal(magnitude(torch.tensor([-2.0, 3.0])), torch.tensor([2.0, 3.0]))


def test_invalid_geometry_is_a_config_error():
    with pytest.raises(ConfigError, match="object_size"):
        FarField(pattern_size=32, object_size=64)
    assert FarField(512, 128).oversampling == 4
    assert PAPER.box().sum() == 32 * 32
