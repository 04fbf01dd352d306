"""The beamtime job on a real local Ray, with the model from the embedded registry by alias."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from cdiflow.beamtime.steps import ReconstructConfig
from cdiflow.phasing.shrinkwrap import ShrinkWrap
from cdiflow.testing import write_corrupt_beamtime

pytestmark = pytest.mark.integration


FAST = ReconstructConfig(schedule="2*(15*HIO+10*ER)", shrinkwrap=ShrinkWrap(start=10), guess=None)


def _register_champion(workspace, tmp_path) -> str:
    from cdiflow.models import ModelConfig, build_model, save_weights
    from cdiflow.pipelines.tracking import RunLogger, configure, experiment_id, register_weights

    config = ModelConfig(base_width=8)
    model = build_model(config, seed=0).eval()
    path = save_weights(tmp_path / "w.pt", model, config)
    uri = configure(workspace)
    logger = RunLogger.start(uri, experiment_id(uri, workspace=workspace), "t", {}, {"train": 0})
    decision = register_weights(uri, logger.run_id, path, {"val_chi2": 0.5})
    logger.finish()
    assert decision.promoted
    return decision.version


def test_job_on_ray_isolates_bad_scans_and_resumes(local_ray, tmp_path, monkeypatch):
    from cdiflow.pipelines.reconstruct import reconstruct_beamtime

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = tmp_path / "ws"
    version = _register_champion(workspace, tmp_path)
    beamtime, cases = write_corrupt_beamtime(tmp_path / "data", np.random.default_rng(2))
    hdf5 = [c.source for c in cases if c.scan is None]
    out = tmp_path / "out"
    lines: list[str] = []
    outcome = reconstruct_beamtime(
        [beamtime, *hdf5], out, workspace=workspace, config=FAST, progress=lines.append
    )
    rows = {(r["number"], r["status"]) for r in outcome.rows}
    assert sum(1 for r in outcome.rows if r["status"] == "ok") == 2, outcome.rows
    assert (1, "ok") in rows and (2, "ok") in rows
    failed = outcome.failed
    assert len(failed) == len(outcome.rows) - 2 and all(r["reason"] for r in failed)
    kinds = {r["error_kind"] for r in failed}
    assert {"unreadable", "missing_frames", "nan_counts", "all_zero", "saturated_peak"} <= kinds
    assert {"not_a_scan", "bad_key"} <= kinds
    assert sum(1 for line in lines if line.startswith("[")) == len(outcome.rows)  # progress
    assert any(f"models:/cdiflow-cnn/{version}" in line for line in lines)  # alias pinned

    from cdiflow.beamtime.results import read_scan_result

    ok = outcome.ok[0]
    arrays, attrs = read_scan_result(out / ok["result"])
    assert attrs["model"]["version"] == version and "champion" in attrs["model"]["aliases"]
    assert arrays["amplitude"].shape == (56, 56) and np.isfinite(ok["refined_chi2"])
    table = pq.read_table(out / "summary.parquet")
    assert table.num_rows == len(outcome.rows)
    # the verdict columns come through Ray Data: every start of a scan was refined
    assert all(r["verdict"] == "failed" for r in failed)
    assert all(r["starts"] == FAST.starts and r["verdict"] for r in outcome.ok)
    assert {"verdict", "consensus_error", "support_fraction"} <= set(table.column_names)
    assert (out / "summary.csv").is_file() and "<img" in (out / "report.html").read_text()

    again = reconstruct_beamtime(
        [beamtime, *hdf5], out, workspace=workspace, config=FAST, progress=lines.append
    )
    assert again.skipped == 2 and again.processed == len(outcome.rows) - 2
    assert [r["status"] for r in again.rows] == [r["status"] for r in outcome.rows]


def test_native_refinement_of_mixed_sizes_on_ray(local_ray, tmp_path, monkeypatch):
    """Refinement patterns of 64 and 256 pixels (and a failed row) share Ray Data
    batches: the ragged columns come through, each scan refined at its own size."""
    from cdiflow.beamtime.preprocess import PreprocessConfig
    from cdiflow.beamtime.results import read_scan_result
    from cdiflow.physics.beamtime import ForwardCDIConfig, forward_cdi_frame
    from cdiflow.physics.generator import GeneratorConfig, generate_samples
    from cdiflow.pipelines.reconstruct import reconstruct_beamtime

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = tmp_path / "ws"
    _register_champion(workspace, tmp_path)
    folder = tmp_path / "frames"
    folder.mkdir()
    modulus = generate_samples(GeneratorConfig(), 0, [0]).modulus[0].astype(np.float64)
    np.save(folder / "particle.npy", (modulus**2 * 1e6).astype(np.float32))
    np.save(folder / "fcdi.npy", forward_cdi_frame(ForwardCDIConfig())[0])
    (folder / "broken.h5").write_bytes(b"not HDF5\n" * 8)
    config = FAST.replace(preprocess=PreprocessConfig(refine_size="native"), refine_batch=3)
    out = tmp_path / "out"
    outcome = reconstruct_beamtime([folder], out, workspace=workspace, config=config)
    by_scan = {r["scan"]: r for r in outcome.rows}
    assert by_scan["broken"]["status"] == "failed"
    shapes = {}
    for name in ("particle", "fcdi"):
        assert by_scan[name]["status"] == "ok", by_scan[name]
        arrays, _ = read_scan_result(out / by_scan[name]["result"])
        shapes[name] = (arrays["amplitude"].shape, arrays["refine_mask"].shape)
    assert shapes == {"particle": ((56, 56), (64, 64)), "fcdi": ((224, 224), (256, 256))}
