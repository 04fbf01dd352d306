"""benchmarks/phase_head.py: the phase error's parts add up, and the gate ramp is swept."""

from __future__ import annotations

import json

import pytest

import phase_head
from cdiflow.models import ModelConfig, build_model, save_weights


def test_parts_sum_to_the_total_and_each_angle_gate_is_a_row(tmp_path):
    paths = []
    for head in ("target", "angle"):
        config = ModelConfig(base_width=4, depth=2, phase_head=head)
        path = tmp_path / f"{head}.pt"
        save_weights(path, build_model(config, seed=1).eval(), config)
        paths.append(str(path))
    out = tmp_path / "phase_head.json"
    argv = [*paths, "--patterns", "8", "--aligned", "4", "--gate-widths", "0,0.1", "--out"]
    result = phase_head.main([*argv, str(out)])
    assert json.loads(out.read_text()) == result
    rows = result["rows"]
    assert [(r["phase_head"], r["phase_gate_width"]) for r in rows] == [
        ("target", None), ("angle", 0.0), ("angle", 0.1),
    ]  # fmt: skip
    for row in rows:
        split, twin = row["phase_split"], row["twin_aware"]
        parts = ("support_on_circle", "wrap_lines", "gate_support_given_zero",
                 "gate_outside_given_phase")  # fmt: skip
        assert sum(split[k] for k in parts) == pytest.approx(split["total"], rel=1e-4)
        assert split["total"] == pytest.approx(twin["chi2_phase_twin_aware"], rel=1e-4)
        assert row["aligned"]["phase_rms"]["median"] >= 0
