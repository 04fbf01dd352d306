"""What a synthetic data set holds: its config, splits and shards (pure, no I/O).

Splits are a pure function of the sample index, so data sets of different sizes made
with the same seed are nested (the train set of 2,000 patterns is part of the train set
of 150,000) and never leak into each other:

- index ``i < num_patterns``: validation when ``i % 20 == 19`` (5 %), else training
  (95 %, the paper's split);
- test: indices ``TEST_INDEX_OFFSET + k`` for ``k < test_patterns``, the same patterns
  whatever ``num_patterns`` is, and disjoint from train/val.

Each split is cut into shards of consecutive positions in that split's index list
(``rows_per_shard`` rows each, the last one shorter). A shard is the unit of work and of
resumption, and its bytes depend only on (config, shard), not on how many workers ran.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math

import numpy as np

from cdiflow.config import Config, require
from cdiflow.physics.generator import GeneratorConfig

SCHEMA_VERSION = 1
SPLITS = ("train", "val", "test")
VAL_PERIOD = 20  # every 20th index is validation: the paper's 95/5 split
TEST_INDEX_OFFSET = 1 << 40  # test indices start here, far above any train/val index
AUTO_ROWS_PER_SHARD = 2048  # shard size when ``shards`` is not given (about 35 MB)


@dataclasses.dataclass(frozen=True)
class DatasetConfig(Config):
    """Everything that fixes a data set's bytes (recorded whole in its manifest)."""

    seed: int = 0  # base seed: sample i is a pure function of (seed, i)
    num_patterns: int = 2000  # train + validation patterns (95/5)
    test_patterns: int = 300  # separate test set, its own indices
    shards: int | None = None  # training shards; None: about 2048 rows per shard
    chunk_size: int = 64  # patterns generated at once = rows per Parquet row group
    generator: GeneratorConfig = GeneratorConfig()

    def validate(self) -> None:
        require(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        require(
            self.num_patterns >= VAL_PERIOD,
            f"num_patterns must be at least {VAL_PERIOD} (so the 5% validation split is "
            f"not empty), got {self.num_patterns}",
        )
        require(self.num_patterns < TEST_INDEX_OFFSET, "num_patterns is too large")
        require(self.test_patterns >= 1, f"test_patterns must be >= 1, got {self.test_patterns}")
        require(self.chunk_size >= 1, f"chunk_size must be >= 1, got {self.chunk_size}")
        if self.shards is not None:
            train = self.count("train")
            require(
                1 <= self.shards <= train,
                f"shards must be between 1 and the {train} training patterns, got {self.shards}",
            )

    def count(self, split: str) -> int:
        """Number of patterns in ``split``."""
        check_split(split)
        val = self.num_patterns // VAL_PERIOD
        return {"train": self.num_patterns - val, "val": val, "test": self.test_patterns}[split]

    @property
    def train_shards(self) -> int:
        if self.shards is not None:
            return self.shards
        return max(1, math.ceil(self.count("train") / AUTO_ROWS_PER_SHARD))

    @property
    def rows_per_shard(self) -> int:
        """Rows of every full shard, in every split (the last shard of a split is shorter)."""
        return math.ceil(self.count("train") / self.train_shards)

    def resolved(self) -> DatasetConfig:
        """The same data set with ``shards`` spelled out (what manifests record)."""
        return self.replace(shards=self.train_shards)

    def fingerprint(self) -> str:
        """sha256 of the resolved config and schema version: names this data set's bytes."""
        text = json.dumps(
            {"schema_version": SCHEMA_VERSION, "dataset": self.resolved().to_dict()},
            sort_keys=True,
        )
        return hashlib.sha256(text.encode()).hexdigest()

    def shard_specs(self) -> list[ShardSpec]:
        """Every shard of every split, in a fixed order (train, val, test)."""
        specs = []
        for split in SPLITS:
            count, size = self.count(split), self.rows_per_shard
            for number, start in enumerate(range(0, count, size)):
                specs.append(ShardSpec(split, number, start, min(start + size, count)))
        return specs


@dataclasses.dataclass(frozen=True)
class ShardSpec:
    """Shard ``number`` of ``split``: positions ``[start, stop)`` of that split's indices."""

    split: str
    number: int
    start: int
    stop: int

    @property
    def rows(self) -> int:
        return self.stop - self.start

    @property
    def name(self) -> str:
        return shard_name(self.number)

    @property
    def relpath(self) -> str:
        """Path relative to the data set folder, e.g. ``train/shard-00003.parquet``."""
        return f"{self.split}/{self.name}"

    def indices(self) -> np.ndarray:
        """The sample indices of this shard, (rows,) int64."""
        return split_indices(self.split, self.start, self.stop)


def shard_name(number: int) -> str:
    return f"shard-{number:05d}.parquet"


def check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def split_indices(split: str, start: int, stop: int) -> np.ndarray:
    """Sample indices at positions ``[start, stop)`` of ``split``, (stop - start,) int64."""
    check_split(split)
    positions = np.arange(start, stop, dtype=np.int64)
    if split == "train":  # skip every VAL_PERIOD-th index
        per_block = VAL_PERIOD - 1
        return positions // per_block * VAL_PERIOD + positions % per_block
    if split == "val":
        return positions * VAL_PERIOD + (VAL_PERIOD - 1)
    return positions + TEST_INDEX_OFFSET


def split_of(index: int) -> str:
    """The split that sample ``index`` belongs to."""
    if index >= TEST_INDEX_OFFSET:
        return "test"
    return "val" if index % VAL_PERIOD == VAL_PERIOD - 1 else "train"
