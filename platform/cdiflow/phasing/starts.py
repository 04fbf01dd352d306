"""Start guesses for refinement: the four starts of the paper's Fig. 5(f).

1. ``random_phase_rectangle``: random phase, rectangle support;
2. ``random_phase_cnn_support``: random phase, support = binarised CNN amplitude;
3. ``cnn_start``: CNN amplitude, phase and support;
4. ``nns_start``: amplitude, phase and support of the nearest-neighbour match.

Starts take plain arrays from any source (a CNN, a nearest-neighbour search, a file):
an amplitude (B, N, N) in [0, 1] and a phase *target* p in (0, 1) with
phi = 2 pi p - pi (the dataset's convention, ``cdiflow.physics``). Objects are placed
in the centre of the P x P field (``pad_centre``); everything is centred.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from cdiflow import OBJECT_SIZE, PATTERN_SIZE
from cdiflow.phasing.shrinkwrap import square_support
from cdiflow.physics.farfield import object_from_targets
from cdiflow.physics.fft import pad_centre
from cdiflow.reconstruction import SUPPORT_THRESHOLD

DEFAULT_THRESHOLD = SUPPORT_THRESHOLD
"""Binarisation threshold of a predicted amplitude, relative to its maximum."""


@dataclasses.dataclass(frozen=True)
class Start:
    """A start guess for a batch.

    Attributes
    ----------
    object : (B, P, P) complex64, centred start object (its scale is free).
    support : (B, P, P) bool, centred start support.
    name : which kind of start ("random-rectangle", "random-cnn-support", "cnn", "nns").
    """

    object: torch.Tensor
    support: torch.Tensor
    name: str

    def __len__(self) -> int:
        return self.object.shape[0]

    def select(self, index) -> Start:
        """The start of a subset of the batch (an index tensor or list)."""
        return Start(self.object[index], self.support[index], self.name)


def torch_generator(rng: int | torch.Generator) -> torch.Generator:
    """A seed or a ``torch.Generator`` -> ``torch.Generator`` (no global RNG, no clock)."""
    if isinstance(rng, torch.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        return torch.Generator().manual_seed(int(rng))
    raise TypeError(f"rng must be an int seed or a torch.Generator, got {type(rng).__name__}")


def support_from_amplitude(amplitude, threshold: float = DEFAULT_THRESHOLD, size=PATTERN_SIZE):
    """Binarise (B, N, N) amplitudes at ``threshold`` x each maximum; -> (B, P, P) bool."""
    amp = torch.as_tensor(amplitude, dtype=torch.float32)
    peak = amp.amax((-2, -1), keepdim=True)
    return pad_centre((amp > threshold * peak) & (peak > 0), size)


def _random_phase(shape, rng) -> torch.Tensor:
    phase = (2.0 * torch.rand(shape, generator=torch_generator(rng)) - 1.0) * math.pi
    return torch.polar(torch.ones(shape), phase)


def phase_scrambled(start: Start, copies: int, rngs) -> Start:
    """``copies`` copies of each of ``start``'s guesses, pattern-major: the guess's
    amplitude and support with uniform random phases, copy by copy from ``rngs[i]`` (one
    seed or ``torch.Generator`` per pattern, so a pattern's copies do not depend on its
    batch)."""
    if len(rngs) != len(start):
        raise ValueError(f"{len(start)} starts but {len(rngs)} generators")
    shape = start.object.shape[1:]
    phases = [_random_phase((copies, *shape), rng) for rng in rngs]
    amp = start.object.abs().repeat_interleave(copies, 0)
    obj = (amp * torch.cat(phases)).to(torch.complex64)
    return Start(obj, start.support.repeat_interleave(copies, 0), start.name)


def random_phase_rectangle(
    batch: int,
    rng: int | torch.Generator,
    rect: tuple[int, int] = (OBJECT_SIZE, OBJECT_SIZE),
    size=PATTERN_SIZE,
) -> Start:
    """Start (i): unit amplitude, uniform random phase in [-pi, pi), centred rectangle support.

    ``rect`` is (height, width) in pixels; the default is the 32 x 32 object box.
    """
    h, w = rect
    support = torch.zeros(size, size, dtype=torch.bool)
    top, left = size // 2 - h // 2, size // 2 - w // 2
    support[top : top + h, left : left + w] = True
    support = support.expand(batch, size, size).clone()
    return Start(_random_phase((batch, size, size), rng) * support, support, "random-rectangle")


def random_phase_cnn_support(
    amplitude, rng: int | torch.Generator, threshold: float = DEFAULT_THRESHOLD, size=PATTERN_SIZE
) -> Start:
    """Start (ii): random phase inside the binarised CNN amplitude (B, N, N)."""
    support = support_from_amplitude(amplitude, threshold, size)
    obj = _random_phase(support.shape, rng) * support
    return Start(obj, support, "random-cnn-support")


def from_prediction(
    amplitude, phase_target, threshold: float = DEFAULT_THRESHOLD, size=PATTERN_SIZE, name="cnn"
) -> Start:
    """Start from a predicted amplitude (B, N, N) and phase target p (B, N, N) in (0, 1)."""
    amp = torch.as_tensor(amplitude, dtype=torch.float32)
    target = torch.as_tensor(phase_target, dtype=torch.float32)
    obj = pad_centre(object_from_targets(amp, target), size)
    return Start(obj, support_from_amplitude(amp, threshold, size), name)


def cnn_start(amplitude, phase_target, threshold: float = DEFAULT_THRESHOLD) -> Start:
    """Start (iii): CNN amplitude, phase and support."""
    return from_prediction(amplitude, phase_target, threshold, name="cnn")


def nns_start(amplitude, phase_target, threshold: float = DEFAULT_THRESHOLD) -> Start:
    """Start (iv): amplitude, phase and support of the nearest-neighbour match."""
    return from_prediction(amplitude, phase_target, threshold, name="nns")


def default_upper_bound(size: int = PATTERN_SIZE, side: int = PATTERN_SIZE // 2) -> torch.Tensor:
    """The fixed square upper-bound support: the central object box (32 x 32 of 64 x 64)."""
    return square_support(size, side)
