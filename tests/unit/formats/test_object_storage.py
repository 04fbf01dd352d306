"""Data sets on object storage: ``s3://`` URIs through ``pyarrow.fs``, against a real S3 API.

``s3_bucket`` (tests/conftest.py) runs ``moto_server`` as a subprocess on 127.0.0.1; the
data set written there must hold exactly the bytes of the same data set written to a
local folder, and read back through the same readers.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from cdiflow.errors import OutputDirError, StorageError
from cdiflow.formats.dataset import (
    list_shards,
    read_manifest,
    read_shard,
    validate_split,
    write_shard,
)
from cdiflow.formats.dataset_folder import write_dataset
from cdiflow.formats.layout import SPLITS, DatasetConfig
from cdiflow.formats.location import Location, location_arg
from cdiflow.physics.generator import GeneratorConfig, generate_samples
from cdiflow.testing import objects_under

# 24 train/val patterns in 2 training shards, 4 test patterns, chunks of 4.
CONFIG = DatasetConfig(seed=7, num_patterns=24, test_patterns=4, shards=2, chunk_size=4)


def _local_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def local_dataset(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("local-dataset")
    write_dataset(root, CONFIG)
    return root


@pytest.fixture(scope="module")
def s3_dataset(s3_bucket) -> str:
    uri = f"{s3_bucket}/data"
    write_dataset(uri, CONFIG)
    return uri


# --- parsing (no server) ----------------------------------------------------------------
def test_a_uri_survives_parsing_and_a_local_path_becomes_a_path(tmp_path):
    assert Path("s3://bucket/x").as_posix() == "s3:/bucket/x"  # the bug this module fixes
    assert location_arg("s3://bucket/data/") == "s3://bucket/data"
    assert location_arg("gs://bucket") == "gs://bucket"
    assert location_arg(str(tmp_path)) == tmp_path
    assert location_arg(f"file://{tmp_path}") == tmp_path
    assert location_arg("relative/folder") == Path("relative/folder")
    data = Location.parse("s3://bucket/data?endpoint_override=host:9000&scheme=http")
    shard = data / "train" / "shard-00000.parquet"
    assert shard.value == (
        "s3://bucket/data/train/shard-00000.parquet?endpoint_override=host:9000&scheme=http"
    )
    assert shard.name == "shard-00000.parquet" and shard.parent.parent == data
    assert Location.parse(tmp_path) / "x" == Location.parse(tmp_path / "x")
    assert Location.parse(data) is data


# --- the S3 API -------------------------------------------------------------------------
def test_an_s3_dataset_holds_the_bytes_of_the_local_one(local_dataset, s3_dataset):
    local, remote = _local_files(local_dataset), objects_under(s3_dataset)
    assert sorted(remote) == sorted(local)  # no lock, temp or stray object
    for name, data in local.items():
        assert remote[name] == data, name
    manifest = json.loads(remote["manifest.json"])
    assert manifest == json.loads(local["manifest.json"])
    assert manifest["counts"] == {split: CONFIG.count(split) for split in SPLITS}


def test_an_s3_dataset_reads_back_through_the_dataset_reader(local_dataset, s3_dataset):
    from cdiflow.phasing.nns import read_patterns
    from cdiflow.pipelines.data import read_split_arrays

    assert read_manifest(s3_dataset) == read_manifest(local_dataset)
    for split in SPLITS:
        assert validate_split(s3_dataset, split).count(split) == CONFIG.count(split)
        remote, local = list_shards(s3_dataset, split), list_shards(local_dataset, split)
        assert all(isinstance(p, str) and p.startswith(f"{s3_dataset}/{split}/") for p in remote)
        assert [Location.parse(p).name for p in remote] == [p.name for p in local]
        for uri, path in zip(remote, local, strict=True):
            got, want = read_shard(uri, CONFIG.generator), read_shard(path, CONFIG.generator)
            assert got.keys() == want.keys()
            for name in want:
                np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    remote, local = (
        read_split_arrays(s3_dataset, "train"),
        read_split_arrays(local_dataset, "train"),
    )
    for name in local:
        np.testing.assert_array_equal(remote[name], local[name])
    for got, want in zip(
        read_patterns(s3_dataset, split="test"),
        read_patterns(local_dataset, split="test"),
        strict=True,
    ):
        np.testing.assert_array_equal(got, want)


def test_a_rerun_keeps_the_complete_s3_shards(s3_dataset):
    def must_not_generate(spec, chunks):
        raise AssertionError(f"{spec.relpath} was generated again")

    before = objects_under(s3_dataset)
    manifest = write_dataset(s3_dataset, CONFIG, fault=must_not_generate)
    assert manifest == read_manifest(s3_dataset)
    assert objects_under(s3_dataset) == before


def test_a_uri_with_the_endpoint_in_its_query_works(s3_bucket, monkeypatch):
    host = os.environ["AWS_ENDPOINT_URL"].removeprefix("http://")
    monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the query says where the server is
    uri = f"{s3_bucket}/query?endpoint_override={host}&scheme=http"
    small = DatasetConfig(seed=7, num_patterns=20, test_patterns=1, shards=1, chunk_size=4)
    write_dataset(uri, small)
    assert validate_split(uri, "train").count("train") == small.count("train")
    assert list_shards(uri, "train")[0].endswith("shard-00000.parquet?" + uri.split("?")[1])


def test_s3_refuses_foreign_objects_and_another_dataset(s3_bucket):
    foreign = Location.parse(f"{s3_bucket}/foreign")
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(OutputDirError, match="thesis.tex"):
        write_dataset(foreign, CONFIG)
    assert [entry.name for entry in foreign.children()] == ["thesis.tex"]

    other = f"{s3_bucket}/other"
    write_dataset(other, DatasetConfig(seed=1, num_patterns=20, test_patterns=1, shards=1))
    with pytest.raises(OutputDirError, match="another data set"):
        write_dataset(other, CONFIG)


def test_a_failing_writer_uploads_nothing(s3_bucket):
    generator = GeneratorConfig()
    target = Location.parse(f"{s3_bucket}/failed/shard-00000.parquet")

    def batches():
        yield generate_samples(generator, 0, np.arange(2))
        raise RuntimeError("killed half-way")

    with pytest.raises(RuntimeError, match="half-way"):
        write_shard(target, batches(), 0, generator)
    assert not target.exists() and not target.parent.exists()
    info = write_shard(target, generate_samples(generator, 0, np.arange(2)), 0, generator)
    assert target.is_file() and target.size() == info.bytes


def test_a_missing_bucket_or_dataset_is_a_clear_error(s3_bucket):
    from cdiflow.errors import DatasetError

    with pytest.raises(StorageError, match="s3://no-such-bucket-cdiflow/data"):
        write_dataset("s3://no-such-bucket-cdiflow/data", CONFIG)
    with pytest.raises(DatasetError, match="no manifest"):
        read_manifest(f"{s3_bucket}/nothing-here")
