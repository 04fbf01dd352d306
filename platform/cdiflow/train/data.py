"""In-memory training data from the generator, and batch iterables over it.

For training without a Parquet dataset (benchmarks, quick CPU runs, the GPU script):
``generate_tensors`` makes samples with ``cdiflow.physics.generate_samples`` (optionally
in worker processes), ``shuffled_batches`` / ``ordered_batches`` cut them into the batch
dicts that ``cdiflow.train.loop`` consumes.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from cdiflow.physics.generator import GeneratorConfig, generate_samples

KEYS = ("modulus", "amplitude", "phase")
"""The tensors every batch holds; batches of masked data (the realistic preset) add
``mask`` (B, P, P) bool, True where measured."""


def generate_chunk(config_dict: dict, seed: int, indices: Sequence[int]) -> dict[str, np.ndarray]:
    """Samples ``indices`` as numpy arrays (picklable, for worker processes)."""
    if multiprocessing.parent_process() is not None:  # a worker: one thread per process
        torch.set_num_threads(1)
    s = generate_samples(GeneratorConfig.from_dict(config_dict), seed, indices)
    out = {"modulus": s.modulus, "amplitude": s.amplitude, "phase": s.phase}
    if s.mask is not None:
        out["mask"] = np.ascontiguousarray(np.broadcast_to(s.mask, s.modulus.shape))
    return out


def chunks(indices: Sequence[int], size: int) -> list[np.ndarray]:
    indices = np.asarray(indices, dtype=np.int64)
    return [indices[i : i + size] for i in range(0, len(indices), size)]


def generate_tensors(
    config: GeneratorConfig,
    seed: int,
    indices: Sequence[int],
    workers: int = 0,
    chunk_size: int = 256,
) -> dict[str, torch.Tensor]:
    """Samples ``indices`` of the data set (config, seed) as CPU float32 tensors.

    ``workers`` > 0 generates chunks in that many spawned processes (one thread each);
    the result does not depend on ``workers`` (a sample is a function of seed and index).
    """
    parts = chunks(indices, chunk_size)
    if workers > 0:
        ctx = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(workers, mp_context=ctx) as pool:
            futures = [pool.submit(generate_chunk, config.to_dict(), seed, p) for p in parts]
            results = [f.result() for f in futures]
    else:
        results = [generate_chunk(config.to_dict(), seed, p) for p in parts]
    return {k: torch.from_numpy(np.concatenate([r[k] for r in results])) for k in results[0]}


def shuffled_batches(
    data: dict[str, torch.Tensor], batch_size: int, seed: int, epoch: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Full batches in an order that is a function of (seed, epoch); the tail is dropped."""
    n = data["modulus"].shape[0]
    gen = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    order = torch.randperm(n, generator=gen).to(data["modulus"].device)
    for start in range(0, n - batch_size + 1, batch_size):
        idx = order[start : start + batch_size]
        yield {k: v[idx] for k, v in data.items()}


def ordered_batches(
    data: dict[str, torch.Tensor], batch_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Every pattern once, in order (the last batch may be short): for evaluation."""
    n = data["modulus"].shape[0]
    for start in range(0, n, batch_size):
        yield {k: v[start : start + batch_size] for k, v in data.items()}
