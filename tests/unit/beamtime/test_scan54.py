"""The per-scan steps on the real APS 34-ID-C scan 54 (skipped when the data is absent)."""

from __future__ import annotations

import json

import numpy as np

from cdiflow.beamtime.steps import (
    ReconstructConfig,
    plan_scans,
    read_and_preprocess,
    run_items_locally,
    upper_bound_side,
)


def test_scan54_reads_and_preprocesses(scan54):
    items = plan_scans([scan54])
    assert [i["scan"] for i in items] == ["Staff20-1a_S0054"] and items[0]["number"] == 54
    row = read_and_preprocess(items[0], ReconstructConfig())
    assert row["status"] == "ok", row["reason"]
    params = json.loads(row["parameters"])
    assert params["frame_index"] == 99 and row["frames"] == 201
    # bin 1 from the measured oversampling (crop 128 / bin 2 under-sampled x at 1.97)
    assert 2.3 < row["oversampling_y"] < 4.5 and 2.3 < row["oversampling_x"] < 4.5
    assert row["modulus"].shape == (64, 64) and row["modulus"].max() == 1.0
    # the object is wider than the 32-pixel box: the automatic upper bound makes room
    extent = (row["object_extent_y"], row["object_extent_x"])
    assert extent == tuple(params["refine"]["object_extent"])  # typed, from the record
    assert upper_bound_side(ReconstructConfig(), extent) > 32


def test_scan54_reconstructs(scan54, tiny_model, fast_config, tmp_path):
    rows = run_items_locally(plan_scans([scan54]), tiny_model, fast_config, tmp_path, {})
    row = rows[0]
    assert row["status"] == "ok", row["reason"]
    assert 0 < row["refined_chi2"] < 0.02 and row["refined_chi2"] < row["cnn_chi2"]
    assert (tmp_path / row["result"]).is_file() and (tmp_path / row["preview"]).is_file()


def test_upper_bound_rule():
    def side(extent, fixed=0):
        return upper_bound_side(ReconstructConfig(upper_bound=fixed), tuple(extent))

    assert side([26.0, 32.5]) == 50  # scan 54
    assert side([10.0, 12.0]) == 32  # never below the object box
    assert side([40.0, 40.0]) == 56  # never above 56 (the result images' size)
    assert side([26.0, 32.5], fixed=40) == 40
    assert np.isfinite(side([0.0, 0.0]))
