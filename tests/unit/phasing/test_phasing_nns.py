"""Nearest-neighbour search: chunked top-k equals brute force; self-match; Parquet loader."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from cdiflow.errors import DatasetError
from cdiflow.phasing.nns import ReferenceSet, features, iter_shards, top_k
from cdiflow.physics.fft import normalise_modulus, object_modulus
from conftest import synthetic_objects


def _reference_arrays(n, seed=0):
    obj = synthetic_objects(n, seed=seed).to(torch.complex64)
    amp = obj.abs() / obj.abs().amax((-2, -1), keepdim=True)
    phase = torch.where(amp > 0, (obj.angle() + math.pi) / (2 * math.pi), 0.0)
    modulus = normalise_modulus(object_modulus(obj, 64))
    return modulus.numpy(), amp.float().numpy(), phase.float().numpy()


@pytest.mark.parametrize("chunk", [7, 100, 5000])
def test_chunked_top_k_equals_brute_force(chunk):
    g = torch.Generator().manual_seed(0)
    refs = features(torch.rand(1000, 64, 64, generator=g))
    queries = features(torch.rand(37, 64, 64, generator=g))
    scores, index = top_k(queries, refs, k=5, chunk=chunk)
    brute = queries @ refs.T
    b_scores, b_index = brute.topk(5, dim=1)
    assert torch.equal(index, b_index)
    assert torch.allclose(scores, b_scores, atol=1e-6)


def test_search_finds_the_pattern_itself_and_returns_its_targets():
    modulus, amp, phase = _reference_arrays(60)
    refs = ReferenceSet.from_arrays(modulus, amp, phase)
    g = torch.Generator().manual_seed(1)
    rows = [3, 17, 42]
    noisy = torch.from_numpy(modulus[rows]) * (1 + 0.01 * torch.randn(3, 64, 64, generator=g))
    res = refs.search(noisy.abs(), k=4, chunk=16, query_batch=2)
    assert res.index.tolist() == rows
    assert np.all(res.score > 0.99) and np.all(res.chi2 < 0.02)
    np.testing.assert_allclose(res.amplitude, amp[rows], atol=1e-3)
    np.testing.assert_allclose(res.phase, phase[rows], atol=1e-3)


def test_score_ranks_like_chi2_with_fitted_scale():
    from cdiflow.metrics import chi2

    modulus, amp, phase = _reference_arrays(20, seed=3)
    q = torch.from_numpy(modulus[:1]) * 0.5 + 0.01
    res = ReferenceSet.from_arrays(modulus, amp, phase, binning=1).search(q, k=20)
    all_chi2 = chi2(torch.from_numpy(modulus), q.expand(20, 64, 64), fit_scale=True)
    assert res.index[0] == int(all_chi2.argmin())


def test_parquet_loader(tmp_path):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    modulus, amp, phase = _reference_arrays(12, seed=5)
    (tmp_path / "train").mkdir()
    for s, rows in enumerate([slice(0, 5), slice(5, 12)]):
        table = pa.table(
            {
                "modulus": pa.FixedShapeTensorArray.from_numpy_ndarray(modulus[rows]),
                "amplitude": pa.FixedShapeTensorArray.from_numpy_ndarray(amp[rows]),
                "phase": pa.FixedShapeTensorArray.from_numpy_ndarray(phase[rows]),
            }
        )
        pq.write_table(table, tmp_path / "train" / f"shard-{s:05d}.parquet")
    refs = ReferenceSet.from_parquet(tmp_path)
    assert len(refs) == 12
    assert len(ReferenceSet.from_parquet(tmp_path / "train", limit=7)) == 7
    res = refs.search(torch.from_numpy(modulus[[9]]))
    assert res.index.tolist() == [9]
    with pytest.raises(DatasetError):
        list(iter_shards(tmp_path / "nothing-here"))
