"""Nearest-neighbour search (NNS): match patterns against reference patterns.

The score is the normalised (uncentred) correlation ``<q, r> / (|q| |r|)`` of two moduli.
For max-normalised patterns it ranks references exactly as chi^2 (eq. 5) with a fitted
scale does, since ``chi2_fit = 1 - corr^2``. The search is one matrix product per chunk
of references (``query_batch x D`` times ``D x chunk``), keeping the running top-k, so
memory stays bounded by the chunk size whatever the number of references.

Representation (the speed/accuracy choice): patterns are compared on a 2 x 2-binned
modulus (32 x 32 = 1024 features instead of 4096), which cuts the stored matrix and the
work four-fold (150,000 references: 0.6 GB float32 instead of 2.4 GB). The top ``k``
candidates of that coarse pass are then re-ranked at full resolution on the moduli
recomputed from their stored amplitude and phase (``k`` FFTs per query), so the match
returned is the best of the ``k`` by the real eq. 5 score. Reference amplitude and phase
targets are kept as float16 (0.3 GB for 150,000), which is ample for a start guess.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import math

import numpy as np
import torch

from cdiflow import PATTERN_SIZE
from cdiflow.errors import DatasetError
from cdiflow.formats.location import Location
from cdiflow.physics.farfield import FarField, object_from_targets
from cdiflow.physics.fft import object_modulus
from cdiflow.reconstruction import Reconstruction

_EPS = 1e-12


def features(modulus: torch.Tensor, binning: int = 2) -> torch.Tensor:
    """(B, P, P) moduli -> (B, (P/binning)^2) float32 rows of unit L2 norm."""
    x = torch.as_tensor(modulus, dtype=torch.float32)
    if binning > 1:
        x = torch.nn.functional.avg_pool2d(x.unsqueeze(1), binning)
    x = x.flatten(1)
    return x / torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min(_EPS)


def top_k(
    queries: torch.Tensor, references: torch.Tensor, k: int = 1, chunk: int = 16384
) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k inner products of unit rows: (Q, D) x (N, D) -> scores (Q, k), index (Q, k).

    References are processed ``chunk`` rows at a time; only the running top-k is kept.
    """
    k = min(k, references.shape[0])
    best_s = torch.full((queries.shape[0], 0), -math.inf, device=queries.device)
    best_i = torch.zeros((queries.shape[0], 0), dtype=torch.long, device=queries.device)
    refs_dtype = references.dtype
    q = queries.to(refs_dtype)
    for start in range(0, references.shape[0], chunk):
        scores = (q @ references[start : start + chunk].T).float()
        s, i = scores.topk(min(k, scores.shape[1]), dim=1)
        best_s, pick = torch.cat([best_s, s], 1).topk(min(k, best_s.shape[1] + s.shape[1]), 1)
        best_i = torch.cat([best_i, i + start], 1).gather(1, pick)
    return best_s, best_i


@dataclasses.dataclass(frozen=True)
class NNSResult:
    """Best match per query.

    Attributes
    ----------
    index : (Q,) int64 row of the match in the reference set.
    score : (Q,) float32 full-resolution normalised correlation of query and match.
    chi2 : (Q,) float32 eq. 5 with fitted scale of the match's modulus (= 1 - score^2).
    amplitude, phase : (Q, N, N) float32 amplitude and phase target p of the match.
    """

    index: np.ndarray
    score: np.ndarray
    chi2: np.ndarray
    amplitude: np.ndarray
    phase: np.ndarray


@dataclasses.dataclass(frozen=True)
class ReferenceSet:
    """Reference patterns prepared for search.

    Attributes
    ----------
    features : (R, D) float32 unit rows (``features``), D = (P / binning)^2.
    amplitude, phase : (R, N, N) float16 amplitude and phase targets (p in (0, 1)).
    binning : the binning the features were made with.
    """

    features: torch.Tensor
    amplitude: np.ndarray
    phase: np.ndarray
    binning: int = 2

    def __len__(self) -> int:
        return self.features.shape[0]

    @classmethod
    def from_arrays(cls, modulus, amplitude, phase, binning: int = 2) -> ReferenceSet:
        """Build from arrays: modulus (R, P, P), amplitude and phase target (R, N, N)."""
        return cls(
            features(modulus, binning),
            np.asarray(amplitude, dtype=np.float16),
            np.asarray(phase, dtype=np.float16),
            binning,
        )

    @classmethod
    def from_parquet(cls, folder, binning: int = 2, limit: int | None = None) -> ReferenceSet:
        """Stream the shards of a data set folder (``shard-*.parquet``) into a ReferenceSet.

        ``folder`` is a split folder (``DATA/train``) or a data set root, whose ``train``
        split is used. Only the binned features and float16 targets are kept in memory.
        """
        feats, amps, phases, n = [], [], [], 0
        for modulus, amplitude, phase in iter_shards(folder):
            if limit is not None:
                take = limit - n
                modulus, amplitude, phase = modulus[:take], amplitude[:take], phase[:take]
            feats.append(features(torch.from_numpy(modulus), binning))
            amps.append(amplitude.astype(np.float16))
            phases.append(phase.astype(np.float16))
            n += len(modulus)
            if limit is not None and n >= limit:
                break
        if not feats:
            raise DatasetError(f"{folder}: no reference patterns found")
        return cls(torch.cat(feats), np.concatenate(amps), np.concatenate(phases), binning)

    def search(self, modulus, k: int = 8, chunk: int = 16384, query_batch: int = 256) -> NNSResult:
        """Best match for each query modulus (Q, P, P): coarse top-k, full-res re-rank."""
        q_full = torch.as_tensor(modulus, dtype=torch.float32)
        out = {"index": [], "score": []}
        for a in range(0, q_full.shape[0], query_batch):
            qb = q_full[a : a + query_batch]
            _, cand = top_k(features(qb, self.binning), self.features, k, chunk)
            score = self._full_resolution_scores(qb, cand)
            best = score.argmax(1, keepdim=True)
            out["index"].append(cand.gather(1, best)[:, 0])
            out["score"].append(score.gather(1, best)[:, 0])
        index = torch.cat(out["index"]).numpy()
        score = torch.cat(out["score"]).numpy()
        return NNSResult(
            index=index,
            score=score,
            chi2=(1.0 - score.astype(np.float64) ** 2).astype(np.float32),
            amplitude=self.amplitude[index].astype(np.float32),
            phase=self.phase[index].astype(np.float32),
        )

    def _full_resolution_scores(self, queries: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        """Normalised correlation of each query with the moduli of its candidates."""
        flat = cand.flatten().numpy()
        amp = torch.from_numpy(self.amplitude[flat].astype(np.float32))
        obj = object_from_targets(amp, torch.from_numpy(self.phase[flat].astype(np.float32)))
        mod = object_modulus(obj, queries.shape[-1]).reshape(*cand.shape, -1)
        q = queries.flatten(1)
        q = q / torch.linalg.vector_norm(q, dim=1, keepdim=True).clamp_min(_EPS)
        mod = mod / torch.linalg.vector_norm(mod, dim=2, keepdim=True).clamp_min(_EPS)
        return torch.einsum("qd,qkd->qk", q, mod)


class NNSReconstructor:
    """Nearest-neighbour search as a reconstructor: the best match's amplitude and phase."""

    def __init__(self, references: ReferenceSet, k: int = 8):
        self.references, self.k = references, k

    def reconstruct(self, modulus, mask, physics: FarField) -> Reconstruction:
        """The match of each (B, P, P) modulus; chi^2 of its |F| over the measured pixels."""
        modulus = torch.as_tensor(modulus, dtype=torch.float32)
        found = self.references.search(modulus, k=self.k)
        amp, target = torch.from_numpy(found.amplitude), torch.from_numpy(found.phase)
        mask = None if mask is None else torch.as_tensor(mask, dtype=torch.bool)
        chi2 = physics.chi2(physics.modulus_of_targets(amp, target), modulus, mask, fit_scale=True)
        return Reconstruction.from_targets(amp, target, chi2)


def shard_paths(folder, split: str = "train") -> list[Location]:
    """Sorted ``shard-*.parquet`` files of a split folder, or of ``folder/<split>``.

    ``folder`` is a local folder or an object-storage URI (``s3://bucket/data/test``).
    """
    root = Location.parse(folder)
    paths = _shards_in(root) or _shards_in(root / split)
    if not paths:
        raise DatasetError(f"{root}: no shard-*.parquet files (nor in {root / split})")
    return paths


def _shards_in(folder: Location) -> list[Location]:
    if not folder.is_dir():
        return []
    return [p for p in folder.children() if fnmatch.fnmatchcase(p.name, "shard-*.parquet")]


def iter_shards(folder, columns=("modulus", "amplitude", "phase"), split: str = "train"):
    """Yield (modulus, amplitude, phase) numpy arrays per shard, read with plain pyarrow."""
    import pyarrow.parquet as pq

    for path in shard_paths(folder, split):
        where, filesystem = path.for_arrow()
        table = pq.read_table(where, columns=list(columns), filesystem=filesystem)
        arrays = []
        for name in columns:
            try:
                arr = table.column(name).combine_chunks().to_numpy_ndarray()
            except (KeyError, AttributeError, TypeError) as exc:
                raise DatasetError(f"{path}: column {name!r} unreadable ({exc})") from None
            arrays.append(np.array(arr, dtype=np.float32))  # writable copy
        if arrays[0].shape[1:] != (PATTERN_SIZE, PATTERN_SIZE):
            raise DatasetError(f"{path}: modulus has shape {arrays[0].shape[1:]}")
        yield tuple(arrays)


def read_patterns(folder, count: int | None = None, split: str = "test"):
    """The first ``count`` (modulus, amplitude, phase) rows of a split folder, as arrays."""
    parts, n = [], 0
    for arrays in iter_shards(folder, split=split):
        parts.append(arrays)
        n += len(arrays[0])
        if count is not None and n >= count:
            break
    if not parts:
        raise DatasetError(f"{folder}: no patterns")
    return tuple(np.concatenate([p[i] for p in parts])[:count] for i in range(3))
