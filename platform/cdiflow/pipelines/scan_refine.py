"""Refinement stage of a beamtime reconstruction: starts, upper bound, batched phasing."""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from cdiflow import OBJECT_SIZE, PATTERN_SIZE
from cdiflow.pipelines.scan_rows import (
    RESULT_SIZE,
    ReconstructConfig,
    fail_in_batch,
    ok_mask,
    writable,
)


def start_seed(seed: int, key: str) -> int:
    """Seed of scan ``key``'s random start: a pure function of (seed, key)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def make_start(config: ReconstructConfig, amp: np.ndarray, target: np.ndarray, keys):
    """The configured start for a batch (B, N, N) of CNN outputs (``cdiflow.phasing``)."""
    import torch

    from cdiflow.phasing.starts import (
        Start,
        cnn_start,
        random_phase_cnn_support,
        random_phase_rectangle,
    )

    if config.start == "cnn":
        return cnn_start(amp, target, threshold=config.support_threshold)
    parts = []
    for i, key in enumerate(keys):
        seed = start_seed(config.seed, str(key))
        if config.start == "random-rectangle":
            parts.append(random_phase_rectangle(1, seed))
        else:
            parts.append(random_phase_cnn_support(amp[i : i + 1], seed, config.support_threshold))
    return Start(
        torch.cat([s.object for s in parts]), torch.cat([s.support for s in parts]), parts[0].name
    )


def upper_bound_side(config: ReconstructConfig, parameters: str) -> int:
    """Side of the square upper-bound support for one scan (``ReconstructConfig``)."""
    if config.upper_bound:
        return config.upper_bound
    extent = json.loads(parameters).get("object_extent") or [0, 0]
    side = int(np.ceil(1.5 * max(float(e) for e in extent) / 2.0)) * 2
    return int(min(max(side, OBJECT_SIZE), RESULT_SIZE))


def refine_batch(batch: dict, config: ReconstructConfig, device: str = "cpu") -> dict:
    """Refine the ok rows from the configured start (``cdiflow.phasing.refine.refine``).

    Sets ``amplitude`` and ``phase`` (radians, global phase removed) of the central
    N x N, ``support`` (N x N), ``chi2_curve`` (per iteration), ``refined_chi2`` (chi^2
    of the best support-consistent iterate), ``upper_bound`` and ``t_refine`` (seconds
    per pattern). Rows with the same upper bound are refined together; a pattern whose
    refinement fails (support collapse, bad start) fails alone.
    """
    batch = writable(batch)
    ok = np.flatnonzero(ok_mask(batch))
    sides = np.array([upper_bound_side(config, batch["parameters"][i]) for i in ok], int)
    for side in np.unique(sides):
        _refine_rows(batch, ok[sides == side], int(side), config, device)
    return batch


def _refine_rows(batch: dict, rows: np.ndarray, side: int, config, device: str) -> None:
    import torch

    from cdiflow.phasing.refine import refine
    from cdiflow.phasing.shrinkwrap import square_support

    t0 = time.perf_counter()
    try:
        start = make_start(
            config, batch["cnn_amplitude"][rows], batch["cnn_phase"][rows], batch["key"][rows]
        )
        result = refine(
            torch.from_numpy(batch["modulus"][rows]),
            start,
            config.schedule,
            mask=torch.from_numpy(batch["mask"][rows]),
            beta=config.beta,
            shrinkwrap=config.shrinkwrap,
            upper_bound=square_support(PATTERN_SIZE, side),
            device=device,
        )
    except Exception as exc:  # noqa: BLE001
        for i in rows:
            fail_in_batch(batch, int(i), "refine", exc)
        return
    per = (time.perf_counter() - t0) / len(rows)
    amplitude, phase, support = object_images(result.obj, result.support, side)
    for j, i in enumerate(rows):
        error = result.errors[j]
        if error is not None:
            fail_in_batch(batch, int(i), "refine", error)
            continue
        batch["amplitude"][i] = amplitude[j]
        batch["phase"][i] = phase[j]
        batch["support"][i] = support[j]
        batch["chi2_curve"][i] = result.chi2[j].numpy()
        batch["refined_chi2"][i] = float(result.best_chi2[j])
        batch["upper_bound"][i] = side
        batch["t_refine"][i] = per


def object_images(obj, support, side: int):
    """Amplitude, phase (radians) and support of the central ``side`` x ``side`` box.

    Parameters
    ----------
    obj : (B, P, P) complex tensor, centred; support : (B, P, P) bool tensor.

    Returns
    -------
    (B, S, S) float32 amplitude, float32 phase, bool support as numpy arrays, with
    S = ``RESULT_SIZE``: the box is zero-padded or cropped to it, so every scan's images
    have one shape whatever its upper bound.
    """
    import torch

    from cdiflow.physics.fft import crop_centre, pad_centre

    box = crop_centre(obj, side)
    # Phase retrieval fixes the object only up to a global phase: remove it (phase of
    # the sum set to 0) so images and unwrapping start from 0.
    box = box * torch.exp(-1j * torch.angle(box.sum((-2, -1), keepdim=True)))
    box = _to_size(box, RESULT_SIZE, crop_centre, pad_centre)
    mask = _to_size(crop_centre(support, side), RESULT_SIZE, crop_centre, pad_centre)
    return box.abs().numpy(), box.angle().numpy(), mask.numpy().astype(bool)


def _to_size(x, size: int, crop, pad):
    return crop(x, size) if x.shape[-1] >= size else pad(x, size)
