"""Symmetry averaging: the CNN asked about the pattern's flips and transposes, answers averaged.

A flip of a centred pattern about its centre along one axis (q -> -q) is the pattern of
the object flipped the same way, and the transposed pattern is the transposed object's:
the Fourier transform commutes with both, for any complex object. So the network can be
asked about the eight images of the pattern under the square's symmetries (the dihedral
group D4) and each answer, mapped back, describes the same object. ``SymmetryAveraged``
does that and averages the answers:

- each answer is first aligned to the plain one: it may be the twin (complex conjugate,
  point-inverted), which gives the same pattern, so the network may have committed to
  either; the closer of the answer and its twin is kept;
- amplitudes are averaged as they are; phase targets (the phase mapped to 0..1, 0
  outside the particle) as a circular mean where the mean amplitude is above the
  support threshold, and as a plain mean elsewhere, where 0 marks "outside" rather than
  a phase.

The network is run ``count`` times (8 by default). The shipped model's scores with and
without the averaging, and the cost, are in ``benchmarks/results/pretrained.json``
(``benchmarks/pretrained_eval.py``).
"""

from __future__ import annotations

import torch
from torch import nn

from cdiflow.metrics import image_error
from cdiflow.physics.farfield import centred_flip, twin_targets
from cdiflow.reconstruction import SUPPORT_THRESHOLD

# (transpose, flipped axes) for each element of D4; the identity first (the reference)
SYMMETRIES: tuple[tuple[bool, tuple[int, ...]], ...] = tuple(
    (transpose, axes) for transpose in (False, True) for axes in ((), (-1,), (-2,), (-2, -1))
)


def transform(x: torch.Tensor, symmetry: tuple[bool, tuple[int, ...]]) -> torch.Tensor:
    """``x`` (..., N, N), centred, under one element of D4: flip ``axes``, then transpose."""
    transpose, axes = symmetry
    x = centred_flip(x, axes) if axes else x
    return x.transpose(-1, -2) if transpose else x


def untransform(x: torch.Tensor, symmetry: tuple[bool, tuple[int, ...]]) -> torch.Tensor:
    """The inverse of ``transform``: transpose back, then flip the same axes."""
    transpose, axes = symmetry
    x = x.transpose(-1, -2) if transpose else x
    return centred_flip(x, axes) if axes else x


class SymmetryAveraged(nn.Module):
    """``model`` run on ``count`` symmetric images of each pattern, its answers averaged.

    A drop-in for the network wherever one is taken (``CNNReconstructor``, evaluation):
    the same (B, P, P) moduli [and (B, P, P) mask] in, the same (B, 2, N, N) amplitude and
    phase target out. ``count`` takes the first elements of ``SYMMETRIES`` (1: the plain
    network; 2: and its x-flip; 4: the flips; 8: all of D4).
    """

    def __init__(self, model: nn.Module, count: int = len(SYMMETRIES)):
        super().__init__()
        if not 1 <= count <= len(SYMMETRIES):
            raise ValueError(f"count must be 1..{len(SYMMETRIES)}, got {count}")
        self.model = model
        self.count = count

    def forward(self, modulus: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        answers = []
        for symmetry in SYMMETRIES[: self.count]:
            inputs = [transform(modulus, symmetry)]
            if mask is not None:
                inputs.append(transform(mask, symmetry))
            answers.append(untransform(self.model(*inputs), symmetry))
        return average_answers(answers)


def average_answers(answers: list[torch.Tensor]) -> torch.Tensor:
    """The mean of (B, 2, N, N) answers about one object, each aligned to the first."""
    reference = answers[0]
    aligned = torch.stack([reference, *(align_twin(a, reference) for a in answers[1:])])
    amplitude, phase = aligned[:, :, 0], aligned[:, :, 1]
    mean_amplitude = amplitude.mean(0)
    # circular mean of the phase targets, each unwrapped to the reference's
    offset = phase - reference[:, 1]
    circular = (reference[:, 1] + (offset - torch.round(offset)).mean(0)) % 1.0
    peak = mean_amplitude.flatten(1).amax(1).clamp_min(1e-12)[:, None, None]
    inside = mean_amplitude > SUPPORT_THRESHOLD * peak
    mean_phase = torch.where(inside, circular, phase.mean(0))
    return torch.stack([mean_amplitude, mean_phase], 1)


def align_twin(answer: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """``answer`` or its twin, per pattern, whichever is closer to ``reference`` (both
    (B, 2, N, N) amplitude and phase target)."""
    twin = torch.stack(twin_targets(answer[:, 0], answer[:, 1]), 1)
    use_twin = _distance(twin, reference) < _distance(answer, reference)
    return torch.where(use_twin[:, None, None, None], twin, answer)


def _distance(answer: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """(B,) image error of the amplitude plus that of the phase target."""
    return image_error(answer[:, 0], reference[:, 0]) + image_error(answer[:, 1], reference[:, 1])
