"""Evaluation numbers without Ray or MLflow: per-pattern errors and the Gamma fit."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cdiflow.physics.farfield import twin_targets
from cdiflow.physics.generator import GeneratorConfig, generate_samples
from cdiflow.pipelines.evaluate import gamma_fit, pattern_errors


class Oracle(nn.Module):
    """Returns fixed outputs (the truth, or a constant), whatever the input."""

    def __init__(self, outputs: np.ndarray):
        super().__init__()
        self.outputs = nn.Parameter(torch.from_numpy(outputs), requires_grad=False)
        self.start = 0

    def forward(self, modulus):
        out = self.outputs[self.start : self.start + modulus.shape[0]]
        self.start += modulus.shape[0]
        return out


def test_ground_truth_scores_near_zero_and_a_blank_prediction_does_not():
    samples = generate_samples(GeneratorConfig(), 3, np.arange(6))
    arrays = {"modulus": samples.modulus, "amplitude": samples.amplitude, "phase": samples.phase}
    truth = np.stack([samples.amplitude, samples.phase], axis=1)
    exact = pattern_errors(Oracle(truth), arrays, batch_size=4)
    for kind in ("modulus", "amplitude", "phase"):
        assert exact[kind].shape == (6,)
    assert exact["amplitude"].max() == 0 and exact["phase"].max() == 0
    # not 0: the phase target drops the halo's phase outside the support (see module doc)
    assert exact["modulus"].max() < 0.02
    blank = pattern_errors(Oracle(np.full_like(truth, 0.5)), arrays)
    assert blank["modulus"].min() > 0.1 and blank["amplitude"].min() > 0.05


def test_twin_aware_errors_forgive_the_twin_and_only_the_twin():
    samples = generate_samples(GeneratorConfig(), 4, np.arange(6))
    arrays = {"modulus": samples.modulus, "amplitude": samples.amplitude, "phase": samples.phase}
    amp_t, phase_t = twin_targets(
        torch.from_numpy(samples.amplitude), torch.from_numpy(samples.phase)
    )
    twin = np.stack([amp_t.numpy(), phase_t.numpy()], axis=1)
    errors = pattern_errors(Oracle(twin), arrays)
    assert errors["amplitude"].min() > 1e-3  # the plain score punishes the twin
    assert errors["amplitude_twin_aware"].max() < 1e-6
    assert errors["phase_twin_aware"].max() < 1e-6
    assert errors["modulus"].max() < 0.02  # same |F| as the object
    blank = pattern_errors(Oracle(np.full_like(twin, 0.5)), arrays)
    assert (blank["amplitude_twin_aware"] <= blank["amplitude"] + 1e-12).all()
    assert blank["amplitude_twin_aware"].min() > 0.05


def test_gamma_fit_recovers_the_mean():
    rng = np.random.default_rng(0)
    values = rng.gamma(shape=2.0, scale=0.01, size=4000)
    fit = gamma_fit(values)
    assert abs(fit["shape"] - 2.0) < 0.15
    assert abs(fit["mean"] - 0.02) < 0.001
    assert fit["count"] == 4000
    constant = gamma_fit(np.zeros(5))
    assert np.isnan(constant["shape"]) and constant["mean"] == 0.0
