"""The Parquet data set format, pure pyarrow: layout, shards, manifest, checks."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdiflow.errors import ConfigError, CorruptShard, DatasetError, OutputDirError
from cdiflow.formats.dataset import (
    Manifest,
    generate_shard,
    list_shards,
    read_manifest,
    read_shard,
    shard_identity,
    validate_split,
    write_manifest,
    write_shard,
)
from cdiflow.formats.dataset_folder import (
    LOCK_NAME,
    finish_folder,
    inspect_folder,
    locked_folder,
    write_dataset,
)
from cdiflow.formats.layout import (
    SPLITS,
    TEST_INDEX_OFFSET,
    DatasetConfig,
    split_indices,
    split_of,
)
from cdiflow.physics.detector import DetectorConfig
from cdiflow.physics.generator import PARAMETER_NAMES, GeneratorConfig, generate_samples

# Small and quick: 40 train/val patterns in 4 training shards of 10, chunks of 4.
CONFIG = DatasetConfig(seed=3, num_patterns=40, test_patterns=6, shards=4, chunk_size=4)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = tmp_path_factory.mktemp("dataset")
    write_dataset(root, CONFIG)
    return root


def _files(root) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (hidden temp and lock files included)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture
def copy(dataset, tmp_path):
    return shutil.copytree(dataset, tmp_path / "copy")


# --- layout -----------------------------------------------------------------------------
def test_splits_are_95_5_by_index_and_test_is_disjoint():
    config = DatasetConfig(num_patterns=200, test_patterns=300)
    train = split_indices("train", 0, config.count("train"))
    val = split_indices("val", 0, config.count("val"))
    test = split_indices("test", 0, config.count("test"))
    assert (config.count("train"), config.count("val")) == (190, 10)
    assert sorted(np.concatenate([train, val]).tolist()) == list(range(200))
    assert all(i % 20 == 19 for i in val) and not any(i % 20 == 19 for i in train)
    assert test.min() == TEST_INDEX_OFFSET and len(set(test.tolist())) == 300
    assert {split_of(i) for i in train} == {"train"} and {split_of(i) for i in test} == {"test"}


def test_smaller_data_set_is_a_prefix_of_a_larger_one():
    small, large = DatasetConfig(num_patterns=40), DatasetConfig(num_patterns=4000)
    for split in SPLITS:
        n = small.count(split)
        assert np.array_equal(
            split_indices(split, 0, n), split_indices(split, 0, large.count(split))[:n]
        )


def test_shards_cover_each_split_with_contiguous_positions():
    config = DatasetConfig(num_patterns=1000, test_patterns=301, shards=7)
    for split in SPLITS:
        specs = [s for s in config.shard_specs() if s.split == split]
        assert [s.number for s in specs] == list(range(len(specs)))
        assert specs[0].start == 0 and specs[-1].stop == config.count(split)
        assert all(a.stop == b.start for a, b in zip(specs, specs[1:], strict=False))
        assert max(s.rows for s in specs) == min(config.rows_per_shard, config.count(split))
    assert len([s for s in config.shard_specs() if s.split == "train"]) == 7
    assert config.shard_specs()[0].relpath == "train/shard-00000.parquet"


@pytest.mark.parametrize(
    "fields, words",
    [
        ({"num_patterns": 0}, "num_patterns"),
        ({"num_patterns": 10}, "at least 20"),
        ({"test_patterns": 0}, "test_patterns"),
        ({"shards": 0}, "shards"),
        ({"shards": 39}, "shards"),  # more shards than the 38 training patterns
        ({"chunk_size": 0}, "chunk_size"),
        ({"seed": -1}, "seed"),
    ],
)
def test_invalid_dataset_config_is_refused(fields, words):
    with pytest.raises(ConfigError, match=words):
        DatasetConfig(**{"num_patterns": 40, **fields})


def test_unknown_and_impossible_generator_keys_are_refused():
    with pytest.raises(ConfigError, match="unknown key"):
        DatasetConfig.from_dict({"generator": {"object_sise": 32}})
    with pytest.raises(ConfigError, match="does not fit"):
        DatasetConfig.from_dict({"generator": {"object_size": 40}})  # 2 N > P = 64
    with pytest.raises(ConfigError, match="positive"):
        DatasetConfig.from_dict({"generator": {"pattern_size": -64}})


def test_fingerprint_names_the_bytes_not_the_spelling():
    auto = DatasetConfig(num_patterns=40)
    assert auto.fingerprint() == auto.replace(shards=auto.train_shards).fingerprint()
    assert auto.fingerprint() != auto.replace(seed=1).fingerprint()


# --- shards -----------------------------------------------------------------------------
def test_shard_round_trips_through_plain_pyarrow(dataset):
    spec = CONFIG.shard_specs()[1]
    table = pq.read_table(dataset / spec.relpath)
    modulus = table.column("modulus").combine_chunks().to_numpy_ndarray()
    expected = generate_samples(CONFIG.generator, CONFIG.seed, spec.indices())
    assert modulus.shape == (10, 64, 64) and modulus.dtype == np.float32
    np.testing.assert_array_equal(modulus, expected.modulus)
    np.testing.assert_array_equal(table.column("index").to_numpy(), spec.indices())
    assert pq.ParquetFile(dataset / spec.relpath).metadata.num_row_groups == 3  # chunks 4+4+2
    arrays = read_shard(dataset / spec.relpath, CONFIG.generator)
    np.testing.assert_array_equal(arrays["phase"], expected.phase)
    np.testing.assert_array_equal(arrays["seed"], np.full(10, 3))
    for name in PARAMETER_NAMES:
        np.testing.assert_array_equal(arrays[name], expected.parameters[name])
    assert "mask" not in arrays


def test_same_shard_written_twice_has_the_same_bytes(tmp_path, dataset):
    spec = CONFIG.shard_specs()[0]
    chunks = [
        generate_samples(CONFIG.generator, CONFIG.seed, p) for p in np.split(spec.indices(), [4, 8])
    ]
    info = write_shard(
        tmp_path / spec.name, chunks, 3, CONFIG.generator, shard_identity(CONFIG, spec)
    )
    assert (tmp_path / spec.name).read_bytes() == (dataset / spec.relpath).read_bytes()
    assert info == read_manifest(dataset).shards["train"][0]


def test_mask_column_only_with_a_masked_detector(tmp_path):
    generator = GeneratorConfig(detector=DetectorConfig(beamstop_radius=3, gap_width=2))
    batch = generate_samples(generator, 0, [5, 6])
    write_shard(
        tmp_path / "shard-00000.parquet",
        batch,
        0,
        generator,
        {"format": "cdiflow-dataset", "schema_version": 1},
    )
    arrays = read_shard(tmp_path / "shard-00000.parquet", generator)
    assert arrays["mask"].shape == (2, 64, 64) and arrays["mask"].dtype == np.uint8
    np.testing.assert_array_equal(arrays["mask"][1], batch.mask.astype(np.uint8))
    assert np.all(arrays["modulus"][:, batch.mask == 0] == 0)
    with pytest.raises(CorruptShard, match="unexpected column"):
        read_shard(tmp_path / "shard-00000.parquet", GeneratorConfig())


def test_a_failed_write_leaves_neither_shard_nor_temp_file(tmp_path):
    def chunks():
        yield generate_samples(CONFIG.generator, 0, [0, 1])
        raise RuntimeError("killed mid-shard")

    with pytest.raises(RuntimeError, match="mid-shard"):
        write_shard(tmp_path / "shard-00000.parquet", chunks(), 0, CONFIG.generator)
    assert list(tmp_path.iterdir()) == []


def _rewrite(path, change):
    """Rewrite a shard's table through ``change`` (keeping its cdiflow metadata)."""
    table = pq.read_table(path)
    pq.write_table(change(table).replace_schema_metadata(table.schema.metadata), path)


def test_nan_is_refused_naming_file_and_column(copy):
    path = copy / "train/shard-00002.parquet"

    def poison(table):
        amplitude = table.column("amplitude").combine_chunks().to_numpy_ndarray().copy()
        amplitude[3, 5, 5] = np.nan
        column = pa.FixedShapeTensorArray.from_numpy_ndarray(amplitude)
        return table.set_column(table.schema.get_field_index("amplitude"), "amplitude", column)

    _rewrite(path, poison)
    with pytest.raises(CorruptShard, match=r"shard-00002\.parquet: column 'amplitude' has NaN"):
        read_shard(path)


def test_missing_column_and_wrong_shape_are_refused(copy):
    path = copy / "train/shard-00001.parquet"
    _rewrite(path, lambda t: t.drop_columns(["phase"]))
    with pytest.raises(CorruptShard, match=r"shard-00001\.parquet: column 'phase' is missing"):
        read_shard(path)
    with pytest.raises(CorruptShard, match="'modulus' has type"):
        read_shard(copy / "train/shard-00000.parquet", GeneratorConfig(pattern_size=128))


def test_foreign_and_damaged_files_are_refused_by_name(tmp_path, dataset):
    foreign = tmp_path / "foreign.parquet"
    pq.write_table(pa.table({"modulus": [1.0, 2.0]}), foreign)
    with pytest.raises(CorruptShard, match=r"foreign\.parquet: not a cdiflow shard"):
        read_shard(foreign)
    garbage = tmp_path / "garbage.parquet"
    garbage.write_bytes(b"definitely not parquet" * 100)
    with pytest.raises(CorruptShard, match=r"garbage\.parquet: not a readable Parquet"):
        read_shard(garbage)
    truncated = tmp_path / "truncated.parquet"
    truncated.write_bytes((dataset / "train/shard-00000.parquet").read_bytes()[:-100])
    with pytest.raises(CorruptShard, match=r"truncated\.parquet"):
        read_shard(truncated)


# --- manifest and validation ------------------------------------------------------------
def test_manifest_records_config_counts_and_checksums(dataset):
    manifest = read_manifest(dataset)
    assert manifest.dataset == CONFIG.resolved()
    assert {s: manifest.count(s) for s in SPLITS} == {"train": 38, "val": 2, "test": 6}
    data = json.loads((dataset / "manifest.json").read_text())
    assert data["schema_version"] == 1 and data["seed"] == 3
    assert data["dataset"]["generator"] == CONFIG.generator.to_dict()
    assert data["columns"]["modulus"] == {"dtype": "float32", "shape": [64, 64]}
    assert [e["file"] for e in data["splits"]["train"]] == list_shards_names(dataset, "train")
    assert all(len(e["sha256"]) == 64 for s in SPLITS for e in data["splits"][s])


def list_shards_names(root, split):
    return [p.name for p in list_shards(root, split)]


def test_validate_split_accepts_a_sound_split(dataset):
    for split in SPLITS:
        assert validate_split(dataset, split).count(split) == CONFIG.count(split)


def test_validate_split_names_the_bad_file(copy):
    (copy / "val/shard-00000.parquet").unlink()
    with pytest.raises(DatasetError, match=r"val/shard-00000\.parquet: shard listed .* missing"):
        validate_split(copy, "val")
    shutil.copy(copy / "train/shard-00001.parquet", copy / "train/shard-00000.parquet")
    with pytest.raises(DatasetError, match=r"train/shard-00000\.parquet: sha256 differs"):
        validate_split(copy, "train")
    validate_split(copy, "train", deep=False)  # same rows and schema: only the checksum tells
    shutil.copy(copy / "train/shard-00001.parquet", copy / "train/shard-00009.parquet")
    with pytest.raises(DatasetError, match=r"shard-00009\.parquet: shard not listed"):
        validate_split(copy, "train", deep=False)


def test_validate_split_names_nan_column_even_with_matching_checksum(copy):
    path = copy / "test/shard-00000.parquet"
    _rewrite(
        path,
        lambda t: t.set_column(
            t.schema.get_field_index("a"), "a", pa.array(np.full(t.num_rows, np.nan))
        ),
    )
    manifest = read_manifest(copy)
    from cdiflow.formats.dataset import file_sha256

    entry = dataclasses.replace(
        manifest.shards["test"][0], sha256=file_sha256(path), bytes=path.stat().st_size
    )
    write_manifest(
        copy, dataclasses.replace(manifest, shards={**manifest.shards, "test": (entry,)})
    )
    with pytest.raises(DatasetError, match=r"test/shard-00000\.parquet: column 'a' has NaN"):
        validate_split(copy, "test")


def test_no_manifest_means_incomplete(copy):
    (copy / "manifest.json").unlink()
    with pytest.raises(DatasetError, match="no manifest"):
        validate_split(copy, "train")


# --- the output folder ------------------------------------------------------------------
def test_write_dataset_writes_what_the_ray_free_reference_writes(dataset, tmp_path):
    """The reference: each shard by ``generate_shard`` with one torch thread, then the
    manifest, as the ``cdiflow generate`` driver and its Ray writers do (the bytes that
    tests/integration/test_generate.py holds Ray's output to)."""
    import torch

    from cdiflow import __version__

    reference = tmp_path / "reference"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        infos = {}
        for spec in CONFIG.shard_specs():
            (reference / spec.split).mkdir(parents=True, exist_ok=True)
            infos[spec.relpath] = generate_shard(reference, CONFIG, spec)
    finally:
        torch.set_num_threads(threads)
    specs = CONFIG.shard_specs()
    by_split = {s: tuple(infos[p.relpath] for p in specs if p.split == s) for s in SPLITS}
    write_manifest(reference, Manifest(CONFIG.resolved(), by_split, __version__))
    assert _files(dataset) == _files(reference)
    assert torch.get_num_threads() == threads  # restored
    assert read_manifest(dataset) == write_dataset(tmp_path / "again", CONFIG)


def test_write_dataset_resumes_and_refuses_another_data_set(copy):
    before = _files(copy)
    (copy / "train/shard-00002.parquet").unlink()
    (copy / "manifest.json").unlink()
    (copy / "val/.shard-00000.parquet.0123456789ab.tmp").write_bytes(b"half")  # a killed run
    manifest = write_dataset(copy, CONFIG)
    assert _files(copy) == before and manifest == read_manifest(copy)
    with pytest.raises(OutputDirError, match="another data set"):
        write_dataset(copy, CONFIG.replace(seed=4))
    assert _files(copy) == before


def test_complete_shards_are_found_for_resumption(copy):
    done = inspect_folder(copy, CONFIG)
    assert sorted(done) == sorted(s.relpath for s in CONFIG.shard_specs())
    assert inspect_folder(copy.parent / "new", CONFIG) == {}


def test_foreign_files_or_another_data_set_are_refused(copy, tmp_path):
    with pytest.raises(OutputDirError, match="another data set"):
        inspect_folder(copy, CONFIG.replace(seed=4))
    (copy / "manifest.json").unlink()  # the shards alone still say whose they are
    with pytest.raises(OutputDirError, match=r"another data set .*shard-00000\.parquet"):
        inspect_folder(copy, CONFIG.replace(seed=4))
    assert len(inspect_folder(copy, CONFIG)) == 6
    (copy / "train" / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="notes.txt"):
        inspect_folder(copy, CONFIG)
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.csv").write_text("1,2")
    with pytest.raises(OutputDirError, match="did not write"):
        inspect_folder(other, CONFIG)
    assert sorted(p.name for p in other.iterdir()) == ["results.csv"]


def test_foreign_or_misplaced_shard_under_our_name_is_refused_by_name(copy):
    shutil.copy(copy / "train/shard-00001.parquet", copy / "train/shard-00003.parquet")
    with pytest.raises(CorruptShard, match=r"shard-00003\.parquet: does not match its name"):
        inspect_folder(copy, CONFIG)
    pq.write_table(pa.table({"x": [1]}), copy / "train/shard-00003.parquet")
    with pytest.raises(CorruptShard, match=r"shard-00003\.parquet: not a cdiflow shard"):
        inspect_folder(copy, CONFIG)


def test_locked_folder_clears_temps_and_refuses_a_second_run(tmp_path):
    root = tmp_path / "data"
    (root / "train").mkdir(parents=True)
    (root / "train/.shard-00000.parquet.0123456789ab.tmp").write_bytes(b"half")
    with locked_folder(root):
        assert sorted(p.name for p in (root / "train").iterdir()) == []
        assert sorted(p.name for p in root.iterdir()) == [LOCK_NAME, "test", "train", "val"]
        with pytest.raises(OutputDirError, match="another run"), locked_folder(root):
            pass
        assert inspect_folder(root, CONFIG) == {}  # the lock file is ours
        finish_folder(root)
    assert not (root / LOCK_NAME).exists()


def test_a_realistic_shard_keeps_one_mask_per_row(tmp_path):
    generator = GeneratorConfig.realistic()
    batch = generate_samples(generator, 0, [3, 4, 5])
    path = tmp_path / "shard-00000.parquet"
    write_shard(path, batch, 0, generator, {"format": "cdiflow-dataset", "schema_version": 1})
    arrays = read_shard(path, generator)
    np.testing.assert_array_equal(arrays["mask"], batch.mask.astype(np.uint8))
    assert len({m.tobytes() for m in arrays["mask"]}) > 1  # the rows' masks differ
