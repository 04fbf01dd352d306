"""The Parquet data set of synthetic diffraction patterns (pure pyarrow, no Ray).

Layout (see ``cdiflow.formats.layout`` for splits and shard ranges)::

    DIR/manifest.json                    written last: present = data set complete
    DIR/{train,val,test}/shard-NNNNN.parquet

One row per pattern. Columns: ``index`` int64, ``seed`` int64, ``modulus`` (P, P),
``amplitude`` (N, N) and ``phase`` (N, N) float32 as Arrow's standard
``fixed_shape_tensor`` extension (plain pyarrow: ``column.combine_chunks()
.to_numpy_ndarray()``; Ray Data reads them as (P, P) arrays), ``mask`` (P, P) uint8
(1 = measured) only when the detector has a beamstop or gaps (the same for every row;
zstd stores the repeats in a few bytes), then every generator parameter
(``PARAMETER_NAMES``) as a float64 column. Patterns are centred (peak in the middle),
normalised to a maximum of 1. zstd, no dictionary, byte-stream-split floats: about 16 kB
per pattern.

Each shard carries its identity in the Parquet key-value metadata (``cdiflow``: format,
schema version, data set fingerprint, split, shard, positions), so a foreign or misplaced
file is refused by name. Shards and the manifest are written atomically
(``cdiflow.formats.atomic``: a temp name in the same folder,
``.shard-NNNNN.parquet.<hex>.tmp``, fsync, ``os.replace``).

``DIR`` may also be an object-storage URI (``s3://bucket/prefix``, ``gs://...``): every
function here takes a ``cdiflow.formats.location.Location`` or what ``Location.parse``
reads, and returns local paths as ``Path`` and object-storage files as URI strings. There
a shard or manifest is written to a local temp file and uploaded whole (a PUT is atomic).

The schema and the batch-to-table conversion are ``shard_schema.py``, the manifest is
``manifest.py``; this module is the one name callers import them by.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from cdiflow.errors import CorruptShard, DatasetError
from cdiflow.formats.atomic import temp_name_re
from cdiflow.formats.layout import SCHEMA_VERSION, SPLITS, DatasetConfig, ShardSpec
from cdiflow.formats.location import Location
from cdiflow.formats.manifest import MANIFEST_NAME, Manifest, read_manifest, write_manifest
from cdiflow.formats.shard_schema import (
    FORMAT_NAME,
    METADATA_KEY,
    TENSOR_COLUMNS,
    ShardInfo,
    batch_table,
    shard_identity,
    shard_schema,
    sized_schema,
)
from cdiflow.physics.generator import GeneratorConfig, SampleBatch, generate_samples

__all__ = [
    "FORMAT_NAME",
    "MANIFEST_NAME",
    "METADATA_KEY",
    "SHARD_RE",
    "TEMP_RE",
    "TENSOR_COLUMNS",
    "Manifest",
    "ShardInfo",
    "batch_table",
    "check_schema",
    "file_sha256",
    "generate_shard",
    "list_shards",
    "read_manifest",
    "read_shard",
    "shard_identity",
    "shard_locations",
    "shard_metadata",
    "shard_schema",
    "sized_schema",
    "validate_split",
    "write_manifest",
    "write_shard",
]

SHARD_RE = re.compile(r"shard-(\d{5})\.parquet")
TEMP_RE = temp_name_re(r"shard-\d{5}\.parquet|manifest\.json")  # a killed writer's leftovers
_WRITE_OPTIONS = dict(
    compression="zstd", compression_level=1, use_dictionary=False, use_byte_stream_split=True
)  # float data: dictionaries only add bytes; zstd 1 is within 0.3% of level 3, faster


# --- writing ----------------------------------------------------------------------------
def write_shard(
    path: str | Path | Location,
    batches: SampleBatch | Iterable[SampleBatch],
    seed: int,
    generator: GeneratorConfig,
    identity: dict[str, Any] | None = None,
) -> ShardInfo:
    """Write ``batches`` (one Parquet row group each) to ``path`` atomically.

    The file appears under its name only once complete and fsynced: it is written to a
    temp name in the same folder, then renamed (object storage: a local temp file,
    uploaded whole). ``ShardInfo.file`` is ``path``'s name.
    """
    location = Location.parse(path)
    if isinstance(batches, SampleBatch):
        batches = [batches]
    schema = shard_schema(generator, identity)
    rows = 0
    with location.writing() as temp:
        with open(temp, "wb") as sink, pq.ParquetWriter(sink, schema, **_WRITE_OPTIONS) as writer:
            for batch in batches:
                writer.write_table(batch_table(batch, seed, schema))
                rows += len(batch.indices)
        digest, size = file_sha256(temp), temp.stat().st_size
    return ShardInfo(file=location.name, rows=rows, sha256=digest, bytes=size)


def file_sha256(path: str | Path | Location) -> str:
    digest = hashlib.sha256()
    with Location.parse(path).open_input() as source:
        for block in iter(lambda: source.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def generate_shard(
    root: str | Path | Location, config: DatasetConfig, spec: ShardSpec, fault=None
) -> ShardInfo:
    """Generate shard ``spec`` of ``config`` into ``root/split/``, ``chunk_size`` at a time.

    The bytes depend only on (config, spec) and torch's thread count (writers use one).
    ``fault`` (tests only) wraps the chunk iterator.
    """
    indices = spec.indices()
    chunks = (
        generate_samples(config.generator, config.seed, indices[start : start + config.chunk_size])
        for start in range(0, len(indices), config.chunk_size)
    )
    if fault is not None:
        chunks = fault(chunks)
    path = Location.parse(root) / spec.split / spec.name
    return write_shard(path, chunks, config.seed, config.generator, shard_identity(config, spec))


# --- reading and checking ---------------------------------------------------------------
def shard_metadata(path: str | Path) -> tuple[pa.Schema, int, dict[str, Any]]:
    """(Arrow schema, row count, identity) from a shard's footer; ``CorruptShard`` if foreign."""
    try:
        where, filesystem = Location.parse(path).for_arrow()
        metadata = pq.read_metadata(where, filesystem=filesystem)
        schema = metadata.schema.to_arrow_schema()
    except (OSError, pa.ArrowException) as exc:
        raise CorruptShard(str(path), f"not a readable Parquet file ({exc})") from None
    raw = (schema.metadata or {}).get(METADATA_KEY)
    try:
        identity = json.loads(raw) if raw else None
    except ValueError:
        identity = None
    if not isinstance(identity, dict) or identity.get("format") != FORMAT_NAME:
        raise CorruptShard(str(path), "not a cdiflow shard (no cdiflow metadata)")
    if identity.get("schema_version") != SCHEMA_VERSION:
        raise CorruptShard(
            str(path),
            f"schema version {identity.get('schema_version')}, this cdiflow reads {SCHEMA_VERSION}",
        )
    return schema, metadata.num_rows, identity


def check_schema(path: str | Path, schema: pa.Schema, generator: GeneratorConfig | None) -> None:
    """Raise ``CorruptShard`` naming the column if ``schema`` is not a shard's schema.

    With ``generator``, shapes and the mask column must match it exactly; without, the
    tensor shapes must only be consistent (square modulus, equal amplitude and phase).
    """
    if generator is not None:
        expected = shard_schema(generator)
    else:
        expected = sized_schema(*_sizes_in(path, schema))
    for field in expected:
        if field.name not in schema.names:
            raise CorruptShard(str(path), f"column {field.name!r} is missing")
        if not schema.field(field.name).type.equals(field.type):
            raise CorruptShard(
                str(path),
                f"column {field.name!r} has type {schema.field(field.name).type}, "
                f"expected {field.type}",
            )
    extra = sorted(set(schema.names) - set(expected.names))
    if extra:
        raise CorruptShard(str(path), f"unexpected column(s) {extra}")


def _sizes_in(path: str | Path, schema: pa.Schema) -> tuple[int, int, bool]:
    """(P, N, has mask) found in ``schema``; ``CorruptShard`` if the shapes disagree."""
    shapes = {}
    for name in TENSOR_COLUMNS:
        if name not in schema.names:
            raise CorruptShard(str(path), f"column {name!r} is missing")
        kind = schema.field(name).type
        if not isinstance(kind, pa.FixedShapeTensorType) or len(kind.shape) != 2:
            raise CorruptShard(str(path), f"column {name!r} is not a 2D fixed_shape_tensor")
        shapes[name] = tuple(kind.shape)
    p, n = shapes["modulus"][0], shapes["amplitude"][0]
    if shapes["modulus"] != (p, p) or not shapes["amplitude"] == shapes["phase"] == (n, n):
        raise CorruptShard(str(path), f"inconsistent tensor shapes {shapes}")
    return p, n, "mask" in schema.names


def read_shard(path: str | Path, generator: GeneratorConfig | None = None) -> dict[str, np.ndarray]:
    """Read a whole shard into numpy arrays, checked.

    Returns ``{column: array}``: ``index``/``seed`` (B,) int64, ``modulus`` (B, P, P),
    ``amplitude``/``phase`` (B, N, N) float32, ``mask`` (B, P, P) uint8 if stored, one
    (B,) float64 array per generator parameter. Raises ``CorruptShard`` naming the file
    (and column) for a foreign or unreadable file, a wrong schema or shape (checked
    against ``generator`` when given), nulls, NaN or inf.
    """
    schema, rows, _ = shard_metadata(path)
    check_schema(path, schema, generator)
    try:
        where, filesystem = Location.parse(path).for_arrow()
        table = pq.read_table(where, filesystem=filesystem)
    except (OSError, pa.ArrowException) as exc:
        raise CorruptShard(str(path), f"unreadable data ({exc})") from None
    if table.num_rows != rows:
        raise CorruptShard(str(path), f"{table.num_rows} rows, footer says {rows}")
    arrays = {}
    for name in table.column_names:
        column = table.column(name)
        if column.null_count:
            raise CorruptShard(str(path), f"column {name!r} has {column.null_count} null(s)")
        if isinstance(column.type, pa.FixedShapeTensorType):
            array = column.combine_chunks().to_numpy_ndarray()
        else:
            array = column.to_numpy()
        if array.dtype.kind == "f":
            bad = ~np.isfinite(array.reshape(len(array), -1)).all(axis=1)
            if bad.any():
                row = int(np.flatnonzero(bad)[0])
                raise CorruptShard(str(path), f"column {name!r} has NaN or inf (row {row})")
        arrays[name] = array
    return arrays


def list_shards(root: str | Path | Location, split: str) -> list[Path | str]:
    """The shard files of ``split`` under data set folder ``root``, in shard order.

    ``Path`` objects for a local folder, URI strings for object storage.
    """
    return [shard.value for shard in shard_locations(root, split)]


def shard_locations(root: str | Path | Location, split: str) -> list[Location]:
    """``list_shards`` as ``Location`` objects (on object storage: one shared filesystem)."""
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {SPLITS}")
    folder = Location.parse(root) / split
    if not folder.is_dir():
        raise DatasetError(f"{folder}: no such split folder")
    return [entry for entry in folder.children() if SHARD_RE.fullmatch(entry.name)]


def validate_split(root: str | Path | Location, split: str, deep: bool = True) -> Manifest:
    """Check that ``split`` of the data set at ``root`` is complete and sound.

    Always: the manifest, every listed shard present with its footer, schema (shapes
    against the manifest's generator config) and row count, and no unlisted shard.
    With ``deep`` (default): each file's sha256 and every value (no NaN, inf or null).
    Memory: one shard at a time. Raises ``DatasetError`` naming the file and column.
    """
    manifest = read_manifest(root)
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r}; expected one of {SPLITS}")
    folder = Location.parse(root) / split
    listed = [folder / info.file for info in manifest.shards[split]]  # one filesystem
    unlisted = sorted(set(list_shards(root, split)) - {path.value for path in listed})
    if unlisted:
        raise DatasetError(f"{unlisted[0]}: shard not listed in the manifest")
    for path, info in zip(listed, manifest.shards[split], strict=True):
        if not path.is_file():
            raise DatasetError(f"{path}: shard listed in the manifest is missing")
        try:
            schema, rows, identity = shard_metadata(path)
            check_schema(path, schema, manifest.generator)
            if rows != info.rows or identity.get("split") != split:
                raise CorruptShard(
                    str(path),
                    f"holds {rows} rows of split {identity.get('split')!r}, the manifest "
                    f"says {info.rows} of {split!r}",
                )
            if deep:
                if file_sha256(path) != info.sha256:
                    raise CorruptShard(str(path), "sha256 differs from the manifest")
                read_shard(path, manifest.generator)
        except CorruptShard as exc:
            raise DatasetError(str(exc)) from exc
    return manifest
