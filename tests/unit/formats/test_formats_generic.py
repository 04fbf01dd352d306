"""open_scan on every generic form, written small in tmp_path."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import tifffile

from cdiflow.errors import ScanError
from cdiflow.formats.generic import open_scan, split_source

RNG = np.random.default_rng(1)
STACK = RNG.poisson(20.0, (5, 16, 16)).astype(np.int32)
PATTERN = RNG.poisson(20.0, (16, 16)).astype(np.float32)


def _assert_stack(scan, expected):
    expected = expected if expected.ndim == 3 else expected[None]
    assert scan.frames.dtype == np.float32 and scan.frames.shape == expected.shape
    np.testing.assert_array_equal(scan.frames, expected.astype(np.float32))
    assert scan.bad_pixels.shape == expected.shape[1:] and not scan.bad_pixels.any()


def test_split_source():
    assert split_source("a/b.h5:/entry/x") == (split_source("a/b.h5")[0], "/entry/x")
    assert split_source("c.npz:key")[1] == "key"
    assert split_source("d.tif")[1] is None


def test_hdf5_with_path_and_default(tmp_path):
    path = tmp_path / "scan.h5"
    with h5py.File(path, "w") as h5:
        h5["/entry/data/data"] = STACK
        h5["/entry/meta/energy"] = 9.0  # scalars are not candidates
    _assert_stack(open_scan(f"{path}:/entry/data/data"), STACK)
    _assert_stack(open_scan(path), STACK)  # the one 2D/3D dataset
    scan = open_scan(f"{path}:/entry/data/data")
    assert scan.source.endswith(":/entry/data/data") and scan.raw.dtype == np.int32


def test_nexus_default_and_cxi(tmp_path):
    nxs = tmp_path / "scan.nxs"
    with h5py.File(nxs, "w") as h5:
        h5.attrs["default"] = "entry"
        entry = h5.create_group("entry")
        entry.attrs["default"] = "data"
        data = entry.create_group("data")
        data.attrs["signal"] = "counts"
        data["counts"] = STACK
        data["other"] = STACK * 2
    _assert_stack(open_scan(nxs), STACK)
    cxi = tmp_path / "scan.cxi"
    with h5py.File(cxi, "w") as h5:
        h5["/entry_1/data_1/data"] = PATTERN
        h5["/entry_1/image_1/data"] = PATTERN * 2
    _assert_stack(open_scan(cxi), PATTERN)


def test_tiff_single_and_multipage(tmp_path):
    tifffile.imwrite(tmp_path / "one.tif", PATTERN)
    tifffile.imwrite(tmp_path / "stack.tiff", STACK)
    _assert_stack(open_scan(tmp_path / "one.tif"), PATTERN)
    _assert_stack(open_scan(tmp_path / "stack.tiff"), STACK)


def test_npy_and_npz(tmp_path):
    np.save(tmp_path / "p.npy", PATTERN)
    np.savez(tmp_path / "two.npz", frames=STACK, other=PATTERN)
    np.savez(tmp_path / "one.npz", only=STACK)
    _assert_stack(open_scan(tmp_path / "p.npy"), PATTERN)
    _assert_stack(open_scan(f"{tmp_path / 'two.npz'}:frames"), STACK)
    _assert_stack(open_scan(tmp_path / "one.npz"), STACK)
    with pytest.raises(ScanError, match="name one as two.npz:KEY"):
        open_scan(tmp_path / "two.npz")
    with pytest.raises(ScanError, match="no array 'nope'"):
        open_scan(f"{tmp_path / 'two.npz'}:nope")


@pytest.mark.parametrize(
    "name, content, match",
    [
        ("bad.npy", b"garbage", "unreadable NPY"),
        ("bad.npz", b"garbage", "unreadable NPZ"),
        ("bad.tif", b"II*\x00garbage", "unreadable TIFF"),
        ("bad.h5", b"garbage", "unreadable HDF5"),
        ("bad.xyz", b"garbage", "unknown scan file type"),
    ],
)
def test_unreadable_files_name_the_file(tmp_path, name, content, match):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ScanError, match=match) as info:
        open_scan(tmp_path / name)
    assert name in str(info.value) and "\n" not in str(info.value)


def test_wrong_dims_and_missing_file(tmp_path):
    np.save(tmp_path / "four.npy", np.ones((2, 2, 16, 16)))
    np.save(tmp_path / "one.npy", np.ones(16))
    for name in ("four.npy", "one.npy"):
        with pytest.raises(ScanError, match="expected a 2D pattern or 3D stack") as info:
            open_scan(tmp_path / name)
        assert info.value.kind == "wrong_shape"
    with pytest.raises(ScanError, match="file not found"):
        open_scan(tmp_path / "absent.h5:/x")
    with h5py.File(tmp_path / "g.h5", "w") as h5:
        h5.create_group("entry")
    with pytest.raises(ScanError, match="is a group"):
        open_scan(f"{tmp_path / 'g.h5'}:/entry")


def test_a_34idc_scan_folder_opens_with_its_beamtime(weak_beamtime):
    root, truth = weak_beamtime
    number = min(truth)
    folder = next(root.glob(f"*/{truth[number]['name']}"))
    scan = open_scan(folder)
    assert scan.name == truth[number]["name"] and scan.frames.shape == (8, 256, 256)
    assert scan.metadata["roi_offset"] == [128, 64]
    with pytest.raises(ScanError, match="not a 34-ID-C"):
        open_scan(root)
