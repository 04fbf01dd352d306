"""Refinement split over CPU workers answers exactly as refinement on torch's threads."""

from __future__ import annotations

import numpy as np

from cdiflow.beamtime.cnn import predict_batch
from cdiflow.beamtime.refine import refine_batch
from cdiflow.beamtime.rows import rows_to_batch
from cdiflow.beamtime.steps import plan_scans, read_and_preprocess


def test_threads_split_the_runs_without_changing_any_answer(good_beamtime, tiny_model, fast_config):
    items = plan_scans([good_beamtime])[:2]
    rows = [read_and_preprocess(item, fast_config) for item in items]
    batch = predict_batch(tiny_model, rows_to_batch(rows), config=fast_config)
    one = refine_batch(batch, fast_config, threads=None)
    split = refine_batch(batch, fast_config, threads=2)
    assert list(one["status"]) == ["ok", "ok"]
    for column in ("refined_chi2", "iterations", "upper_bound", "starts"):
        np.testing.assert_array_equal(one[column], split[column], err_msg=column)
    np.testing.assert_allclose(one["amplitude"], split["amplitude"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(one["support"], split["support"])
