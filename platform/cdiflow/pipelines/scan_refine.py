"""Refinement stage of a beamtime reconstruction: S starts per scan, one batched call.

Every ok scan of a batch is refined from ``config.starts`` starts: the configured start
(the CNN's by default) and ``starts - 1`` random phases inside the CNN support. All the
runs of the batch go through ONE ``cdiflow.phasing.refine.refine`` call (each pattern
with its own upper bound); per scan the run of least chi^2 is the answer and the runs
together give the verdict columns (``cdiflow.pipelines.scan_verdict``).
"""

from __future__ import annotations

import hashlib
import json
import time

import numpy as np

from cdiflow import OBJECT_SIZE, PATTERN_SIZE
from cdiflow.errors import PhasingError
from cdiflow.pipelines.scan_rows import (
    RESULT_SIZE,
    ReconstructConfig,
    fail_in_batch,
    ok_mask,
    writable,
)


def start_seed(seed: int, key: str) -> int:
    """Seed of scan ``key``'s random starts: a pure function of (seed, key)."""
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:7], "little")


def make_starts(config: ReconstructConfig, amp: np.ndarray, target: np.ndarray, keys):
    """``config.starts`` starts per scan for a batch (B, N, N) of CNN outputs.

    Returns a ``Start`` of B x S patterns, scan-major (runs ``i*S .. i*S + S - 1`` are
    scan i's): run 0 is the configured ``start``, runs 1.. random phase inside the CNN
    support. Scan i draws all its random numbers, in that order, from one
    ``torch.Generator`` seeded with ``start_seed(config.seed, key_i)``, so its starts
    do not depend on the batch it is in (and with ``starts=1`` they are what one start
    was before).
    """
    import torch

    from cdiflow.phasing.starts import Start, random_phase_cnn_support

    objects, supports = [], []
    for i, key in enumerate(keys):
        rng = torch.Generator().manual_seed(start_seed(config.seed, str(key)))
        parts = [_first_start(config, amp[i : i + 1], target[i : i + 1], rng)]
        if config.starts > 1:
            extra = np.repeat(amp[i : i + 1], config.starts - 1, axis=0)
            parts.append(random_phase_cnn_support(extra, rng, config.support_threshold))
        objects += [p.object for p in parts]
        supports += [p.support for p in parts]
    name = config.start if config.starts == 1 else f"{config.start}+random-cnn-support"
    return Start(torch.cat(objects), torch.cat(supports), name)


def _first_start(config: ReconstructConfig, amp, target, rng):
    from cdiflow.phasing.starts import cnn_start, random_phase_cnn_support, random_phase_rectangle

    if config.start == "cnn":
        return cnn_start(amp, target, threshold=config.support_threshold)
    if config.start == "random-rectangle":
        return random_phase_rectangle(1, rng)
    return random_phase_cnn_support(amp, rng, config.support_threshold)


def upper_bound_side(config: ReconstructConfig, parameters: str) -> int:
    """Side of the square upper-bound support for one scan (``ReconstructConfig``)."""
    if config.upper_bound:
        return config.upper_bound
    extent = json.loads(parameters).get("object_extent") or [0, 0]
    side = int(np.ceil(1.5 * max(float(e) for e in extent) / 2.0)) * 2
    return int(min(max(side, OBJECT_SIZE), RESULT_SIZE))


def refine_batch(batch: dict, config: ReconstructConfig, device: str = "cpu") -> dict:
    """Refine the ok rows from ``config.starts`` starts each, in one ``refine`` call.

    Sets, from each scan's run of least chi^2: ``amplitude`` and ``phase`` (radians,
    global phase removed) of the central box, ``support``, ``chi2_curve`` (per
    iteration), ``refined_chi2`` (chi^2 of the best support-consistent iterate),
    ``upper_bound``; from all its runs the verdict columns ``starts`` (runs finished),
    ``consensus_error``, ``support_fraction``, ``chi2_converged`` and ``verdict``; and
    ``t_refine`` (seconds per scan). A scan fails only when every one of its runs failed
    (support collapse, bad start); one bad scan never fails the others.
    """
    batch = writable(batch)
    ok = np.flatnonzero(ok_mask(batch))
    if len(ok):
        _refine_rows(batch, ok, config, device)
    return batch


def _refine_rows(batch: dict, rows: np.ndarray, config: ReconstructConfig, device: str) -> None:
    import torch

    from cdiflow.phasing.refine import refine
    from cdiflow.phasing.schedule import parse
    from cdiflow.phasing.shrinkwrap import square_support

    t0 = time.perf_counter()
    s = config.starts
    sides = [upper_bound_side(config, batch["parameters"][i]) for i in rows]
    try:
        start = make_starts(
            config, batch["cnn_amplitude"][rows], batch["cnn_phase"][rows], batch["key"][rows]
        )
        bounds = torch.stack([square_support(PATTERN_SIZE, side) for side in sides])
        result = refine(
            torch.from_numpy(np.repeat(batch["modulus"][rows], s, axis=0)),
            start,
            config.schedule,
            mask=torch.from_numpy(np.repeat(batch["mask"][rows], s, axis=0)),
            beta=config.beta,
            shrinkwrap=config.shrinkwrap,
            upper_bound=bounds.repeat_interleave(s, dim=0),
            device=device,
        )
    except Exception as exc:  # noqa: BLE001
        for i in rows:
            fail_in_batch(batch, int(i), "refine", exc)
        return
    per = (time.perf_counter() - t0) / len(rows)
    algorithms = parse(config.schedule).expand()
    for j, i in enumerate(rows):
        _keep_best(batch, int(i), result, j * s, sides[j], config, algorithms)
        batch["t_refine"][i] = per


def _keep_best(batch, i: int, result, first: int, side: int, config, algorithms) -> None:
    """Record scan ``i``'s answer (its run of least chi^2) and its verdict columns."""
    from cdiflow.pipelines.scan_verdict import assess

    runs = slice(first, first + config.starts)
    errors = result.errors[runs]
    chi2 = result.best_chi2[runs].numpy().astype(np.float64)
    chi2[[k for k, e in enumerate(errors) if e is not None]] = np.nan
    if not np.isfinite(chi2).any():
        failure = PhasingError(f"none of the {config.starts} start(s) gave a finite chi^2")
        fail_in_batch(batch, i, "refine", next((e for e in errors if e is not None), failure))
        return
    best = int(np.nanargmin(chi2))
    b = first + best
    amplitude, phase, support = object_images(
        result.obj[b : b + 1], result.support[b : b + 1], side
    )
    batch["amplitude"][i] = amplitude[0]
    batch["phase"][i] = phase[0]
    batch["support"][i] = support[0]
    batch["chi2_curve"][i] = result.chi2[b].numpy()
    batch["refined_chi2"][i] = float(result.best_chi2[b])
    batch["upper_bound"][i] = side
    photons = json.loads(batch["parameters"][i]).get("pattern_counts")
    found = assess(
        {
            "obj": result.obj[runs],
            "chi2": chi2,
            "curve": result.chi2[runs].numpy(),
            "support": result.support[runs].numpy(),
        },
        best,
        side * side,
        photons,
        config.verdict,
        algorithms,
    )
    for name, value in found.items():
        batch[name][i] = value


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
