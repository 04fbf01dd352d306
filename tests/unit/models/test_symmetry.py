"""Symmetry averaging: the Fourier identities it rests on, and the whole chain against an
oracle network that answers each symmetric image exactly (sometimes with the twin)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from cdiflow.models.reconstructor import CNNReconstructor
from cdiflow.models.symmetry import (
    SYMMETRIES,
    SymmetryAveraged,
    average_answers,
    transform,
    untransform,
)
from cdiflow.physics.farfield import phase_to_target, point_invert, twin_targets
from cdiflow.physics.fft import object_modulus

N, P = 16, 32


def _objects(batch: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, N, N) amplitude and phase target of random asymmetric complex blobs."""
    g = torch.Generator().manual_seed(seed)
    r = torch.arange(N, dtype=torch.float64) - N // 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    amps, phases = [], []
    for _ in range(batch):
        cy, cx, ky, kx = (torch.rand(4, generator=g, dtype=torch.float64) - 0.5).tolist()
        amp = torch.exp(-(((yy - 2 * cy) / 4) ** 2) - ((xx - 3 * cx) / 3) ** 2)
        amp = amp * (amp > 0.2) * (1 + 0.3 * (xx > 1))  # not symmetric under any flip
        phase = torch.remainder(2 * math.pi * (ky * yy + kx * xx) / 4 + 1.0, 2 * math.pi) - math.pi
        amps.append(amp)
        phases.append(phase_to_target(phase, amp > 0))
    return torch.stack(amps).float(), torch.stack(phases).float()


def _modulus(amplitude, phase_target) -> torch.Tensor:
    from cdiflow.physics.farfield import object_from_targets

    return object_modulus(object_from_targets(amplitude, phase_target), P).float()


@pytest.mark.parametrize("symmetry", SYMMETRIES)
def test_a_transformed_objects_pattern_is_the_transformed_pattern(symmetry):
    amplitude, phase = _objects(3)
    from cdiflow.physics.farfield import object_from_targets

    obj = object_from_targets(amplitude, phase)
    moved = object_modulus(transform(obj, symmetry), P)
    assert torch.allclose(moved, transform(object_modulus(obj, P), symmetry), atol=1e-5)


@pytest.mark.parametrize("symmetry", SYMMETRIES)
def test_untransform_inverts_transform(symmetry):
    x = torch.randn(2, 5, N, N)
    assert torch.equal(untransform(transform(x, symmetry), symmetry), x)


class Oracle(nn.Module):
    """Answers a pattern of one of ``truth``'s objects, under any symmetry, with that
    object's targets under the same symmetry; the twin for odd symmetries."""

    def __init__(self, amplitude, phase, mask_seen=None):
        super().__init__()
        self.amplitude, self.phase = amplitude, phase
        self.patterns = _modulus(amplitude, phase)
        self.probe = nn.Parameter(torch.zeros(1))  # a device to read
        self.masks = mask_seen

    def forward(self, modulus, mask=None):
        if self.masks is not None:
            self.masks.append(mask)
        for k, symmetry in enumerate(SYMMETRIES):
            if torch.allclose(modulus, transform(self.patterns, symmetry), atol=1e-5):
                amp = transform(self.amplitude, symmetry)
                phase = transform(self.phase, symmetry)
                if k % 2:
                    amp, phase = twin_targets(amp, phase)
                return torch.stack([amp, phase], 1)
        raise AssertionError("a pattern the oracle never saw")


@pytest.mark.parametrize("count", [1, 2, 4, 8])
def test_exact_answers_average_to_the_truth_whatever_twin_they_give(count):
    amplitude, phase = _objects(4, seed=1)
    averaged = SymmetryAveraged(Oracle(amplitude, phase), count)(_modulus(amplitude, phase))
    assert torch.allclose(averaged[:, 0], amplitude, atol=1e-6)
    assert torch.allclose(averaged[:, 1], phase, atol=1e-6)


def test_the_mask_is_transformed_with_the_pattern():
    amplitude, phase = _objects(2, seed=2)
    seen = []
    mask = torch.ones(2, P, P, dtype=torch.bool)
    mask[:, 3:5, 20:] = False  # a gap off the centre lines: every symmetry moves it
    SymmetryAveraged(Oracle(amplitude, phase, seen))(_modulus(amplitude, phase), mask)
    assert all(torch.equal(m, transform(mask, s)) for m, s in zip(seen, SYMMETRIES, strict=True))


def test_phase_is_averaged_around_the_circle_and_zero_stays_outside():
    amplitude = torch.zeros(1, N, N)
    amplitude[0, 4:12, 4:12] = 1.0
    inside = amplitude > 0
    near_wrap = torch.where(inside, torch.tensor(0.98), torch.tensor(0.0))
    across = torch.where(inside, torch.tensor(0.04), torch.tensor(0.0))  # 0.06 away, wrapped
    answers = [torch.stack([amplitude, p], 1) for p in (near_wrap, across)]
    mean = average_answers(answers)
    assert torch.allclose(mean[0, 1][inside[0]], torch.tensor(0.01), atol=1e-6)
    assert torch.all(mean[0, 1][~inside[0]] == 0)


def test_the_twin_of_an_answer_is_recognised():
    amplitude, phase = _objects(3, seed=3)
    answer = torch.stack([amplitude, phase], 1)
    twin = torch.stack(twin_targets(amplitude, phase), 1)
    mean = average_answers([answer, twin])
    assert torch.allclose(mean, answer, atol=1e-6)
    assert not torch.allclose(point_invert(amplitude), amplitude)  # the test can fail


def test_it_is_a_drop_in_for_the_reconstructor():
    amplitude, phase = _objects(2, seed=4)
    modulus = _modulus(amplitude, phase)
    cnn = CNNReconstructor(SymmetryAveraged(Oracle(amplitude, phase)), device="cpu")
    assert torch.allclose(cnn.predict(modulus)[:, 0], amplitude, atol=1e-6)
    asked = CNNReconstructor(Oracle(amplitude, phase), device="cpu", symmetry=8)
    assert isinstance(asked.model, SymmetryAveraged) and asked.model.count == 8
    assert torch.allclose(asked.predict(modulus)[:, 1], phase, atol=1e-6)


def test_a_count_out_of_range_is_refused():
    with pytest.raises(ValueError, match="1..8"):
        SymmetryAveraged(nn.Identity(), 9)
