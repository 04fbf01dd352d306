"""A source above ``max_source_mib`` gets a failed row before any of it is read.

Regression: HDF5, TIFF and NPY sources were read whole into a worker (with a float32
copy on top), whatever their size. Sizes come from the on-disk headers (HDF5 dataset
shape and dtype, NPY header, TIFF pages), so the files below that declare far more
data than they hold prove the check reads nothing.
"""

from __future__ import annotations

import h5py
import numpy as np
import pyarrow.parquet as pq
import pytest
import tifffile

from cdiflow.beamtime.steps import ReconstructConfig
from cdiflow.cli import main
from cdiflow.formats.aps34idc_writer import write_synthetic_beamtime
from cdiflow.formats.generic import open_scan
from cdiflow.formats.scan import SourceTooLarge
from cdiflow.physics.beamtime import SyntheticBeamtimeConfig
from cdiflow.pipelines.reconstruct import reconstruct_beamtime

STACK = np.random.default_rng(0).poisson(5.0, (8, 64, 64)).astype(np.float32)  # 0.125 MiB
LIMIT_MIB = 0.05
TOO_LARGE = "source is 0.125 MiB, above the limit of 0.05 MiB (--max-source-mib)"


@pytest.fixture()
def sources(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    np.save(folder / "small.npy", STACK[0])  # 16 KiB: under the limit
    np.save(folder / "big.npy", STACK)
    tifffile.imwrite(folder / "big.tif", STACK)
    with h5py.File(folder / "big.h5", "w") as h5:
        h5.create_dataset("/entry/data/data", data=STACK)
    with h5py.File(folder / "huge.h5", "w") as h5:  # 256 GiB declared, nothing written
        h5.create_dataset("data", shape=(4096, 4096, 4096), dtype=np.float32, chunks=True)
    with open(folder / "huge.npy", "wb") as f:  # an NPY header of 400000 MiB, no data
        header = {"descr": "<f4", "fortran_order": False, "shape": (100_000, 1024, 1024)}
        np.lib.format.write_array_header_1_0(f, header)
    return folder


def test_open_scan_refuses_from_the_header(sources):
    limit = int(LIMIT_MIB * 2**20)
    for name in ("big.npy", "big.tif", "big.h5"):
        with pytest.raises(SourceTooLarge, match=r"0\.125 MiB, above the limit of 0\.05 MiB"):
            open_scan(sources / name, max_bytes=limit)
        np.testing.assert_array_equal(open_scan(sources / name).frames, STACK)  # no limit
    with pytest.raises(SourceTooLarge, match="source is 262144 MiB"):
        open_scan(f"{sources / 'huge.h5'}:/data", max_bytes=limit)
    with pytest.raises(SourceTooLarge, match="source is 400000 MiB"):
        open_scan(sources / "huge.npy", max_bytes=2048 * 2**20)
    assert open_scan(sources / "small.npy", max_bytes=limit).frames.shape == (1, 64, 64)


def test_job_fails_the_large_sources_and_runs_the_rest(
    tmp_path, sources, weights_file, fast_config
):
    config = fast_config.replace(max_source_mib=LIMIT_MIB)
    outcome = reconstruct_beamtime(
        [sources],
        tmp_path / "out",
        model=str(weights_file),
        config=config,
        runner="local",
        progress=lambda line: None,
    )
    rows = {r["scan"]: r for r in outcome.rows}  # colliding stems: named by file name
    assert sorted(rows) == ["big.h5", "big.npy", "big.tif", "huge.h5", "huge.npy", "small"]
    assert rows.pop("small")["status"] == "ok"
    for name, row in rows.items():
        assert row["status"] == "failed" and row["stage"] == "read", row
        assert row["error_kind"] == "too_large", row
        if name.startswith("big"):
            assert TOO_LARGE in row["reason"], row["reason"]


def test_34idc_scan_above_the_limit(tmp_path, weights_file, fast_config):
    root = tmp_path / "bt"  # 6 frames of 256 x 256 int32: 1.5 MiB per scan
    config = SyntheticBeamtimeConfig(scans=1, frames=6)
    write_synthetic_beamtime(root, config, np.random.default_rng(2))
    outcome = reconstruct_beamtime(
        [root],
        tmp_path / "out",
        model=str(weights_file),
        config=fast_config.replace(max_source_mib=1.0),
        runner="local",
        progress=lambda line: None,
    )
    (row,) = outcome.rows
    assert row["error_kind"] == "too_large"
    assert "source is 1.5 MiB, above the limit of 1 MiB (--max-source-mib)" in row["reason"]


def test_cli_flag_and_config_field(tmp_path, sources, weights_file):
    assert ReconstructConfig().max_source_mib == 2048
    assert ReconstructConfig().replace(max_source_mib=1).config_hash == (
        ReconstructConfig().config_hash
    )  # refusing a source never changes an answer: finished scans stay finished
    out = tmp_path / "out"
    args = ["reconstruct", str(sources / "big.npy"), "--out", str(out), "--local"]
    args += ["--model", str(weights_file), "--schedule", "2*(15*HIO+10*ER)"]
    assert main([*args, "--max-source-mib", str(LIMIT_MIB)]) == 0
    (row,) = pq.read_table(out / "summary.parquet").to_pylist()
    assert row["status"] == "failed" and TOO_LARGE in row["reason"]
    assert main([*args, "--max-source-mib", "0"]) == 2  # must be > 0
