"""Training data generated on the fly (``cdiflow train --generate N``): Ray Data, no disk.

The stream is the data set that ``cdiflow generate --num-patterns N`` writes with the
same config (seed, generator), read in a different order and never written:

- **train, epoch e**: positions ``e*T .. (e+1)*T`` of the train split's index list
  (``cdiflow.formats.layout.split_indices``; T = the train count of N, 95 %). Epoch 0
  holds exactly the patterns of ``cdiflow generate``'s train split; later epochs go on
  along the same list, so every epoch sees new patterns and none is ever a validation or
  test pattern. Rank r of W Train workers takes the r-th of W equal parts (T // W each).
- **val**: the validation split of ``cdiflow generate`` (N // 20 patterns), the same
  every epoch, so runs on the fly and on disk are scored on the same patterns.

Each part is ``ray.data.range(count)`` -> ``map_batches(generated_rows)``, one task per
``chunk_size`` patterns with one torch thread. A pattern is a pure function of (seed,
index), so neither the number of workers nor Ray's blocks change it. Ray and torch are
imported inside functions.
"""

from __future__ import annotations

import hashlib
import json
import math

import numpy as np

from cdiflow.formats.layout import DatasetConfig, split_indices
from cdiflow.physics.generator import SampleBatch, generate_samples


def sample_columns(samples: SampleBatch) -> dict[str, np.ndarray]:
    """Training columns of generated samples: modulus, amplitude, phase, mask if any.

    ``mask`` is (B, P, P) uint8 (1 = measured) as in the shards, also when the generator
    gives one (P, P) mask for every row.
    """
    columns = {name: getattr(samples, name) for name in ("modulus", "amplitude", "phase")}
    if samples.mask is not None:
        mask = np.broadcast_to(samples.mask.astype(np.uint8), samples.modulus.shape)
        columns["mask"] = np.ascontiguousarray(mask)
    return columns


def indices_at(split: str, positions: np.ndarray) -> np.ndarray:
    """Sample indices of ``split`` at ``positions`` of its index list, (len,) int64."""
    positions = np.asarray(positions, dtype=np.int64)
    if positions.size == 0:
        return positions
    return np.concatenate([split_indices(split, int(p), int(p) + 1) for p in positions])


def generated_rows(
    batch: dict[str, np.ndarray], config: DatasetConfig, split: str, offset: int
) -> dict[str, np.ndarray]:
    """Ray Data ``map_batches`` function: the patterns at positions ``offset + id``."""
    import torch

    torch.set_num_threads(1)  # one core per task; the same floats as ``cdiflow generate``
    indices = indices_at(split, offset + np.asarray(batch["id"], dtype=np.int64))
    return sample_columns(generate_samples(config.generator, config.seed, indices))


def generated_split(config: DatasetConfig, split: str, start: int, stop: int, cpus: float = 1.0):
    """A Ray ``Dataset`` of the patterns at positions ``[start, stop)`` of ``split``, in order."""
    import ray.data

    count = stop - start
    blocks = max(1, math.ceil(count / config.chunk_size))
    positions = ray.data.range(count, override_num_blocks=blocks)
    context = positions.context  # this data set's own copy; the process's stays as it is
    context.execution_options.preserve_order = True  # the same batches on a rerun
    context.enable_progress_bars = False  # one bar per epoch would flood the workers' logs
    return positions.map_batches(
        generated_rows,
        batch_size=config.chunk_size,
        num_cpus=cpus,
        fn_kwargs={"config": config, "split": split, "offset": start},
    )


def epoch_positions(config: DatasetConfig, epoch: int, rank: int, world: int) -> tuple[int, int]:
    """``[start, stop)`` train positions of rank ``rank`` of ``world`` in ``epoch``."""
    per_epoch = config.count("train")
    per_rank = per_epoch // world
    if per_rank < 1:
        raise ValueError(f"{per_epoch} training patterns per epoch for {world} workers")
    start = epoch * per_epoch + rank * per_rank
    return start, start + per_rank


def generated_arrays(config: DatasetConfig, split: str = "val") -> dict[str, np.ndarray]:
    """The whole split generated in this process, float32 arrays as ``read_split_arrays``."""
    count, parts = config.count(split), []
    for start in range(0, count, config.chunk_size):
        positions = np.arange(start, min(start + config.chunk_size, count))
        indices = indices_at(split, positions)
        parts.append(sample_columns(generate_samples(config.generator, config.seed, indices)))
    return {k: np.concatenate([p[k] for p in parts]).astype(np.float32) for k in parts[0]}


def generated_fingerprint(config: DatasetConfig, split: str = "val") -> str:
    """An id of a generated evaluation split: its seed, generator and size (no data read)."""
    text = json.dumps(
        {
            "split": split,
            "seed": config.seed,
            "count": config.count(split),
            "generator": config.generator.to_dict(),
        },
        sort_keys=True,
    )
    return f"generated:sha256:{hashlib.sha256(text.encode()).hexdigest()}"
