"""The reconstructor protocol: CNN, NNS and the iterative engine answer one call."""

from __future__ import annotations

import torch

from cdiflow.models import ModelConfig, build_model
from cdiflow.models.reconstructor import CNNReconstructor
from cdiflow.phasing.nns import NNSReconstructor, ReferenceSet
from cdiflow.phasing.refine import IterativeReconstructor
from cdiflow.phasing.starts import random_phase_rectangle
from cdiflow.physics.farfield import PAPER
from cdiflow.physics.generator import GeneratorConfig, generate_samples
from cdiflow.reconstruction import Reconstruction, Reconstructor, modulus_chi2


def _samples(n: int, seed: int = 0):
    s = generate_samples(GeneratorConfig(), seed, range(n))
    return torch.from_numpy(s.modulus), torch.from_numpy(s.amplitude), torch.from_numpy(s.phase)


def _check_shapes(rec: Reconstruction, batch: int, steps: int | None = None) -> None:
    n = PAPER.object_size
    assert rec.amplitude.shape == rec.phase.shape == rec.support.shape == (batch, n, n)
    assert rec.support.dtype == torch.bool
    assert rec.chi2.shape[0] == batch and (steps is None or rec.chi2.shape[1] == steps)
    assert torch.isfinite(rec.final_chi2).all()
    assert (rec.phase.abs() <= torch.pi + 1e-5).all()


def test_cnn_reconstructor_scores_through_the_one_chi2():
    modulus, _, _ = _samples(4)
    model = build_model(ModelConfig(base_width=4, depth=2), seed=0)
    cnn = CNNReconstructor(model, device="cpu", batch_size=3)
    assert isinstance(cnn, Reconstructor)
    mask = torch.ones(64, 64, dtype=torch.bool)
    mask[30:34, 30:34] = False
    rec = cnn.reconstruct(modulus, mask, PAPER)
    _check_shapes(rec, 4, steps=1)
    again = modulus_chi2(rec, modulus, mask, PAPER)
    assert torch.allclose(again, rec.final_chi2, rtol=1e-4, atol=1e-6)


def test_nns_reconstructor_finds_a_reference_pattern_itself():
    modulus, amplitude, phase = _samples(16, seed=1)
    nns = NNSReconstructor(ReferenceSet.from_arrays(modulus, amplitude, phase), k=4)
    assert isinstance(nns, Reconstructor)
    rec = nns.reconstruct(modulus[3:7], None, PAPER)
    _check_shapes(rec, 4, steps=1)
    assert torch.allclose(rec.amplitude, amplitude[3:7], atol=2e-3)  # float16 references
    assert (rec.final_chi2 < 0.05).all()  # the support threshold loses the faint halo


def test_iterative_reconstructor_curve_ends_at_the_answer():
    modulus, _, _ = _samples(3, seed=2)

    def start(m, physics):
        return random_phase_rectangle(len(m), 0, (physics.object_size,) * 2, physics.pattern_size)

    engine = IterativeReconstructor(start, "20*HIO+10*ER", shrinkwrap=None)
    assert isinstance(engine, Reconstructor)
    rec = engine.reconstruct(modulus, None, PAPER)
    _check_shapes(rec, 3, steps=31)
    assert (rec.final_chi2 <= rec.chi2[:, 0] + 1e-6).all()  # never worse than its start
    # with the scale fitted, the one scoring path can only agree or do better
    assert (modulus_chi2(rec, modulus, None, PAPER) <= rec.final_chi2 * (1 + 1e-4) + 1e-7).all()


def test_cnn_reconstructor_batches_by_device_and_answers_the_same_at_any_batch():
    from cdiflow.models import inference_batch

    modulus, _, _ = _samples(5)
    model = build_model(ModelConfig(base_width=4, depth=2), seed=0)
    cpu = CNNReconstructor(model, device="cpu")
    assert cpu.batch_size == inference_batch("cpu") < inference_batch("cuda")
    one_pass = CNNReconstructor(model, device="cpu", batch_size=5).predict(modulus)
    assert torch.allclose(CNNReconstructor(model, batch_size=2).predict(modulus), one_pass)
