"""The data set's manifest, ``DIR/manifest.json``: its config and every shard's checksum.

Written last (present = data set complete), atomically; read and checked by
``read_manifest``, which names the file in every error.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from cdiflow.errors import DatasetError
from cdiflow.formats.layout import SCHEMA_VERSION, SPLITS, DatasetConfig
from cdiflow.formats.location import Location
from cdiflow.formats.shard_schema import FORMAT_NAME, ShardInfo, shard_schema
from cdiflow.physics.generator import GeneratorConfig

MANIFEST_NAME = "manifest.json"


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What ``DIR/manifest.json`` says: the data set's config and every shard's checksum."""

    dataset: DatasetConfig
    shards: dict[str, tuple[ShardInfo, ...]]  # split -> shards in order
    cdiflow_version: str = ""

    @property
    def generator(self) -> GeneratorConfig:
        return self.dataset.generator

    @property
    def seed(self) -> int:
        return self.dataset.seed

    def count(self, split: str) -> int:
        return sum(info.rows for info in self.shards[split])

    def files(self, root: str | Path | Location, split: str) -> list[Path | str]:
        """The split's shard files under ``root`` (``Path`` when local, else URIs)."""
        folder = Location.parse(root) / split
        return [(folder / info.file).value for info in self.shards[split]]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_NAME,
            "schema_version": SCHEMA_VERSION,
            "cdiflow_version": self.cdiflow_version,
            "fingerprint": self.dataset.fingerprint(),
            "seed": self.dataset.seed,
            "counts": {split: self.count(split) for split in SPLITS},
            "dataset": self.dataset.to_dict(),
            "columns": _column_summary(self.generator),
            "splits": {
                split: [dataclasses.asdict(info) for info in self.shards[split]] for split in SPLITS
            },
        }


def _column_summary(generator: GeneratorConfig) -> dict[str, dict[str, Any]]:
    summary = {}
    for field in shard_schema(generator):
        if isinstance(field.type, pa.FixedShapeTensorType):
            kind, shape = field.type.value_type, list(field.type.shape)
        else:
            kind, shape = field.type, []
        summary[field.name] = {"dtype": np.dtype(kind.to_pandas_dtype()).name, "shape": shape}
    return summary


def write_manifest(root: str | Path | Location, manifest: Manifest) -> Path | str:
    """Write ``root/manifest.json`` atomically (indented JSON, final newline); its path."""
    path = Location.parse(root) / MANIFEST_NAME
    path.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n")
    return path.value


def read_manifest(root: str | Path | Location) -> Manifest:
    """Read and check ``root/manifest.json``; ``DatasetError`` naming the file if bad."""
    path = Location.parse(root) / MANIFEST_NAME
    if not path.is_file():
        raise DatasetError(
            f"{path}: no manifest, so {root} is not a complete cdiflow data set "
            "(re-run the same `cdiflow generate` to finish it)"
        )
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT_NAME:
            raise DatasetError(f"{path}: not a cdiflow data set manifest")
        if data.get("schema_version") != SCHEMA_VERSION:
            raise DatasetError(
                f"{path}: schema version {data.get('schema_version')}, this cdiflow reads "
                f"{SCHEMA_VERSION}"
            )
        dataset = DatasetConfig.from_dict(data["dataset"], where=str(path))
        shards = {
            split: tuple(ShardInfo(**entry) for entry in data["splits"][split]) for split in SPLITS
        }
    except DatasetError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DatasetError(f"{path}: malformed manifest ({type(exc).__name__}: {exc})") from None
    return Manifest(dataset, shards, data.get("cdiflow_version", ""))
