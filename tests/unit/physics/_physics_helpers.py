"""Helpers of the physics tests: random particles and objects, drawn from seeded generators."""

from __future__ import annotations

import numpy as np
import torch

from cdiflow.physics.generator import GeneratorConfig, draw_inputs, sample_rng


def random_inputs(config: GeneratorConfig, seed: int, count: int):
    """(parameters, noise) of ``count`` data-set samples, as the generator draws them."""
    return draw_inputs(config, [sample_rng(seed, i) for i in range(count)])


def random_object(rng: np.random.Generator, n: int = 32, support: int = 16) -> torch.Tensor:
    """(n, n) complex128 object: random amplitude and phase in a centred square, 0 outside."""
    obj = np.zeros((n, n), dtype=np.complex128)
    s = slice(n // 2 - support // 2, n // 2 + support // 2)
    amp = rng.uniform(0.2, 1.0, (support, support))
    phase = rng.uniform(-np.pi, np.pi, (support, support))
    obj[s, s] = amp * np.exp(1j * phase)
    return torch.from_numpy(obj)
