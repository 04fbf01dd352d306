"""The realistic preset: per-sample counts, background, masks and edges."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cdiflow.errors import ConfigError
from cdiflow.losses import physics_loss
from cdiflow.models import ModelConfig, build_model
from cdiflow.physics.detector import DetectorConfig
from cdiflow.physics.generator import GeneratorConfig, generate_samples
from cdiflow.physics.variation import Variation, draw_sample_detector
from cdiflow.train.data import generate_tensors

REALISTIC = GeneratorConfig.realistic()


def test_a_realistic_sample_is_a_function_of_seed_and_index():
    whole = generate_samples(REALISTIC, 3, range(6))
    part = generate_samples(REALISTIC, 3, [4, 1])
    for key in ("modulus", "amplitude", "phase", "mask"):
        np.testing.assert_array_equal(getattr(part, key), getattr(whole, key)[[4, 1]])


def test_each_sample_gets_its_own_mask_and_masked_pixels_hold_zero():
    batch = generate_samples(REALISTIC, 0, range(24))
    assert batch.mask.shape == (24, 64, 64)
    assert np.all(batch.modulus[~batch.mask] == 0)
    fractions = (~batch.mask).mean(axis=(1, 2))
    assert len(np.unique(fractions)) > 3  # beamstops and gaps differ between samples
    assert not batch.mask[:, 32, 32].all()  # some have a beamstop over the centre


def test_the_particle_is_the_papers_where_the_edge_smoothing_is():
    # Variation draws after the paper's generator, so the particle only changes by its
    # edge: samples drawn with the paper's 0.7 have the paper's exact targets.
    rngs = [np.random.default_rng([0, i]) for i in range(16)]
    for rng in rngs:  # replay the paper's draws to reach the variation's
        rng.uniform(size=3), rng.uniform(size=2), rng.uniform(size=3)
        rng.standard_normal(4), rng.integers(2**63)
    sigmas = [draw_sample_detector(Variation(), rng).edge_sigma for rng in rngs]
    same = [i for i, s in enumerate(sigmas) if s == 0.7]
    other = [i for i, s in enumerate(sigmas) if s != 0.7]
    assert same and other
    paper = generate_samples(GeneratorConfig(), 0, range(16))
    # without the oversampling draw, which magnifies every particle
    real = generate_samples(GeneratorConfig(variation=Variation()), 0, range(16))
    np.testing.assert_array_equal(real.amplitude[same], paper.amplitude[same])
    assert not np.allclose(real.amplitude[other], paper.amplitude[other])
    assert not np.allclose(real.modulus[same], paper.modulus[same])  # noise, mask


def test_few_photons_are_noisier_than_many():
    fixed = {"background": (0.0, 0.0), "edge_sigmas": (0.7,)}  # the paper's particles
    few = GeneratorConfig(variation=Variation(photons=(1e4, 1e4), **fixed))
    many = GeneratorConfig(variation=Variation(photons=(1e9, 1e9), **fixed))
    exact = generate_samples(GeneratorConfig(), 1, range(8))

    def error(config):  # over measured pixels, both normalised to a maximum of 1
        b = generate_samples(config, 1, range(8))
        return np.abs(b.modulus - exact.modulus)[b.mask].mean()

    assert error(few) > 5 * error(many)


def test_the_paper_preset_keeps_its_config_dict_and_detector_is_refused_with_variation():
    assert "variation" not in GeneratorConfig().to_dict()
    assert REALISTIC.to_dict()["variation"]["photons"] == [1e4, 1e9]
    assert GeneratorConfig.from_dict(REALISTIC.to_dict()) == REALISTIC
    assert REALISTIC.preset == "realistic" and GeneratorConfig().preset == "paper"
    with pytest.raises(ConfigError):
        GeneratorConfig(variation=Variation(), detector=DetectorConfig(photons=1e5))
    with pytest.raises(ConfigError):
        GeneratorConfig(variation=Variation(edge_sigmas=(2.0,)))  # does not fit the box


def test_in_memory_tensors_carry_the_mask_and_the_physics_term_ignores_masked_pixels():
    data = generate_tensors(REALISTIC, 0, range(4))
    assert data["mask"].dtype == torch.bool and data["mask"].shape == (4, 64, 64)
    prediction = torch.rand(4, 2, 32, 32, generator=torch.Generator().manual_seed(0))
    args = (data["amplitude"], data["phase"])
    before = physics_loss(prediction, data["modulus"], *args, mask=data["mask"])["physics"]
    junk = torch.where(data["mask"], data["modulus"], 5.0)  # anything where unmeasured
    after = physics_loss(prediction, junk, *args, mask=data["mask"])["physics"]
    torch.testing.assert_close(after, before)
    assert not torch.isclose(physics_loss(prediction, junk, *args)["physics"], before)


def test_a_mask_channel_model_sees_the_mask_and_a_plain_one_ignores_it():
    x = torch.rand(2, 64, 64, generator=torch.Generator().manual_seed(1))
    mask = torch.ones(2, 64, 64, dtype=torch.bool)
    mask[:, 30:34, 30:34] = False
    masked = build_model(ModelConfig(base_width=4, depth=2, mask_channel=True), seed=0).eval()
    plain = build_model(ModelConfig(base_width=4, depth=2), seed=0).eval()
    with torch.no_grad():
        # a fresh head outputs about 0.5 everywhere: any difference shows the mask got in
        assert (masked(x, mask) - masked(x)).abs().max() > 0
        torch.testing.assert_close(masked(x), masked(x, torch.ones_like(mask)))
        torch.testing.assert_close(plain(x, mask), plain(x))
