"""Stage 3 of a beamtime reconstruction: the CNN's guess for every ok scan of a batch.

``predict_batch`` runs the CNN (``CNNReconstructor``) on the 64 x 64 moduli and scores
it with the chi^2 of eq. 5 over the measured pixels; with ``--adapt`` it first
fine-tunes a copy of the CNN on the patterns (``cdiflow.models.adapt``), per scan or per
batch, and the adapted CNN's guess is the start of refinement.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from cdiflow.beamtime.rows import fail_in_batch, ok_mask, writable
from cdiflow.models.adapt import adapt
from cdiflow.models.reconstructor import CNNReconstructor
from cdiflow.physics.farfield import PAPER


def predict_batch(
    model, batch: dict, model_info: str = "{}", device: str = "cpu", config=None
) -> dict:
    """Run the CNN on the ok rows: ``cnn_amplitude``, ``cnn_phase`` (target p in (0, 1)),
    ``cnn_chi2`` (eq. 5 of the CNN object's |F| against the pattern, scale fitted, over
    measured pixels) and ``t_cnn`` (seconds per pattern). ``model_info`` (JSON) is
    recorded in every row.

    With ``config.adapt.steps`` > 0 the CNN is first adapted to the patterns
    (``adapt_patterns``); the answer is the adapted CNN's, ``cnn_chi2`` stays the
    shipped CNN's and ``adapted_cnn_chi2`` is the adapted one's.
    """
    import torch

    batch = writable(batch)
    batch["model"] = np.array([model_info] * len(batch["key"]), dtype=object)
    ok = np.flatnonzero(ok_mask(batch))
    if len(ok) == 0:
        return batch
    t0 = time.perf_counter()
    try:
        modulus = torch.from_numpy(batch["modulus"][ok]).float()
        mask = torch.from_numpy(batch["mask"][ok])
        amp, target, fit = _cnn_answer(model, modulus, mask, device)
        if config is not None and config.adapt.steps > 0:
            adapted = adapt_patterns(model, modulus, mask, config, device)
            batch["adapted_cnn_chi2"][ok] = adapted[2].numpy()
            amp, target = adapted[0], adapted[1]
    except Exception as exc:  # noqa: BLE001 - a CNN failure fails these scans, not the job
        for i in ok:
            fail_in_batch(batch, int(i), "cnn", exc)
        return batch
    per = (time.perf_counter() - t0) / len(ok)
    batch["cnn_amplitude"][ok] = amp.numpy()
    batch["cnn_phase"][ok] = target.numpy()
    batch["cnn_chi2"][ok] = fit.numpy()
    batch["t_cnn"][ok] = per
    return batch


def _cnn_answer(model, modulus, mask, device: str):
    """The CNN's amplitude, phase target and scale-fitted chi^2 over measured pixels."""
    out = CNNReconstructor(model, device).predict(modulus, mask)
    amp, target = out[:, 0], out[:, 1]
    predicted = PAPER.modulus_of_targets(amp, target)
    return amp, target, PAPER.chi2(predicted, modulus, mask=mask, fit_scale=True)


def adapt_patterns(model, modulus, mask, config, device: str):
    """Adapt a copy of the CNN to the patterns (per scan or per batch, ``adapt_scope``)
    and return its amplitude, phase target and chi^2 for each of them.

    Runs with gradients even inside the caller's ``inference_mode`` (the CNN actor's).
    """
    import torch

    settings = dataclasses.replace(config.adapt, device=config.adapt.device or device)
    groups = [[i] for i in range(len(modulus))]
    if config.adapt_scope == "batch":
        groups = [list(range(len(modulus)))]
    amp, target, chi2 = [], [], []
    with torch.inference_mode(False), torch.enable_grad():
        m, w = modulus.clone(), mask.clone()  # normal tensors, not inference ones
        for rows in groups:
            net, _info = adapt(model, m[rows], w[rows], config=settings)
            a, t, c = _cnn_answer(net, m[rows], w[rows], device)
            amp.append(a), target.append(t), chi2.append(c)
    return torch.cat(amp), torch.cat(target), torch.cat(chi2)
