"""A dataset shard's Arrow schema, its self-description, and generator batches as tables.

Columns: ``index`` int64, ``seed`` int64, ``modulus`` (P, P), ``amplitude`` (N, N) and
``phase`` (N, N) float32 as Arrow's standard ``fixed_shape_tensor`` extension, ``mask``
(P, P) uint8 only when the detector has a beamstop or gaps, then every generator
parameter (``PARAMETER_NAMES``) as a float64 column. The identity (format, schema
version, data set fingerprint, split, shard, positions) goes into the Parquet key-value
metadata under ``cdiflow``. See ``cdiflow.formats.dataset`` for the whole layout.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pyarrow as pa

from cdiflow.formats.layout import SCHEMA_VERSION, DatasetConfig, ShardSpec
from cdiflow.physics.generator import PARAMETER_NAMES, GeneratorConfig, SampleBatch

FORMAT_NAME = "cdiflow-dataset"
METADATA_KEY = b"cdiflow"
TENSOR_COLUMNS = ("modulus", "amplitude", "phase")


@dataclasses.dataclass(frozen=True)
class ShardInfo:
    """A written shard: path relative to the data set, rows, sha256 of the file, bytes."""

    file: str
    rows: int
    sha256: str
    bytes: int


def shard_schema(generator: GeneratorConfig, identity: dict[str, Any] | None = None) -> pa.Schema:
    """The Arrow schema of a shard for ``generator``; ``identity`` goes into its metadata."""
    return sized_schema(generator.pattern_size, generator.object_size, generator.has_mask, identity)


def sized_schema(
    p: int, n: int, has_mask: bool, identity: dict[str, Any] | None = None
) -> pa.Schema:
    """The shard schema for P x P patterns and N x N targets (``mask`` column if asked)."""
    fields = [
        pa.field("index", pa.int64(), nullable=False),
        pa.field("seed", pa.int64(), nullable=False),
        pa.field("modulus", pa.fixed_shape_tensor(pa.float32(), [p, p])),
        pa.field("amplitude", pa.fixed_shape_tensor(pa.float32(), [n, n])),
        pa.field("phase", pa.fixed_shape_tensor(pa.float32(), [n, n])),
    ]
    if has_mask:
        fields.append(pa.field("mask", pa.fixed_shape_tensor(pa.uint8(), [p, p])))
    fields += [pa.field(name, pa.float64(), nullable=False) for name in PARAMETER_NAMES]
    metadata = {METADATA_KEY: json.dumps(identity, sort_keys=True)} if identity else None
    return pa.schema(fields, metadata=metadata)


def shard_identity(config: DatasetConfig, spec: ShardSpec) -> dict[str, Any]:
    """What a shard says about itself (deterministic: no clock, host or path)."""
    return {
        "format": FORMAT_NAME,
        "schema_version": SCHEMA_VERSION,
        "dataset": config.fingerprint(),
        "split": spec.split,
        "shard": spec.number,
        "start": spec.start,
        "stop": spec.stop,
    }


def batch_table(batch: SampleBatch, seed: int, schema: pa.Schema) -> pa.Table:
    """One Arrow table (rows = samples) from a generator batch, in ``schema``'s order."""
    rows = len(batch.indices)
    columns: dict[str, pa.Array] = {
        "index": pa.array(np.asarray(batch.indices, dtype=np.int64)),
        "seed": pa.array(np.full(rows, seed, dtype=np.int64)),
    }
    for name in TENSOR_COLUMNS:
        array = np.ascontiguousarray(getattr(batch, name), dtype=np.float32)
        columns[name] = pa.FixedShapeTensorArray.from_numpy_ndarray(array)
    if "mask" in schema.names:
        if batch.mask is None:
            raise ValueError("the schema has a mask column but the batch has no mask")
        p = batch.modulus.shape[-1]  # one mask for all rows (P, P), or one per row
        masks = np.broadcast_to(batch.mask.astype(np.uint8), (rows, p, p))
        columns["mask"] = pa.FixedShapeTensorArray.from_numpy_ndarray(np.ascontiguousarray(masks))
    for name in PARAMETER_NAMES:
        columns[name] = pa.array(np.asarray(batch.parameters[name], dtype=np.float64))
    return pa.Table.from_arrays([columns[name] for name in schema.names], schema=schema)
