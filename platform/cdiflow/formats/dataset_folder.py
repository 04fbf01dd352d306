"""The folder a data set is generated into: ownership checks, resumption, locking.

A generation run may be killed at any point and re-run with the same command. What it
leaves behind, and what the re-run does with it:

- complete shards (renamed into place only once fsynced): each names its data set (the
  config fingerprint) in its footer. They are kept, and only missing shards are
  generated again; a re-run with another config or seed is refused rather than mixing
  two data sets.
- temp files ``.shard-NNNNN.parquet.<hex>.tmp``: a killed writer's leftovers, removed.
- ``.generate.lock`` while a run holds the folder; ``manifest.json`` last.

Anything else in the folder is not ours: ``OutputDirError``, before anything is written.

``write_dataset`` runs that protocol in this process, without Ray: the same files as
``cdiflow generate`` (for tests, benchmarks and small data sets).

The folder may be an object-storage URI (``s3://bucket/prefix``; see
``cdiflow.formats.location``). The same checks apply there, but object storage has no
``flock``: no lock object is written, so two runs writing one prefix at the same time are
not detected (they write the same bytes for the same config, and refuse another config).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from cdiflow import __version__
from cdiflow.errors import CorruptShard, OutputDirError
from cdiflow.formats.dataset import (
    MANIFEST_NAME,
    SHARD_RE,
    TEMP_RE,
    Manifest,
    ShardInfo,
    file_sha256,
    generate_shard,
    shard_identity,
    shard_metadata,
    write_manifest,
)
from cdiflow.formats.layout import SPLITS, DatasetConfig, ShardSpec
from cdiflow.formats.location import Location

LOCK_NAME = ".generate.lock"
_OURS_AT_TOP = {MANIFEST_NAME, LOCK_NAME, *SPLITS}


def inspect_folder(root: str | Path | Location, config: DatasetConfig) -> dict[str, ShardInfo]:
    """Complete shards already in ``root`` for ``config``, by relative path; reads only.

    Raises ``OutputDirError`` if ``root`` holds files that are not ours or another data
    set, ``CorruptShard`` naming the file if a shard there is foreign or damaged.
    """
    root = Location.parse(root)
    if not root.exists():
        return {}
    if not root.is_dir():
        raise OutputDirError(f"{root} exists and is not a folder")
    _refuse_foreign(root)
    fingerprint = config.fingerprint()
    if _manifest_fingerprint(root) not in (None, fingerprint):
        raise OutputDirError(
            f"{root} holds another data set (other config or seed); use a new folder"
        )
    expected = {spec.relpath: spec for spec in config.shard_specs()}
    done = {}
    for split in SPLITS:
        for path in _shard_files(root / split):
            _, rows, identity = shard_metadata(path)  # CorruptShard if not a cdiflow shard
            if identity.get("dataset") != fingerprint:
                raise OutputDirError(
                    f"{root} holds another data set (other config or seed: {path}); "
                    "use a new folder"
                )
            spec = expected.get(f"{split}/{path.name}")
            if spec is None or identity != shard_identity(config, spec) or rows != spec.rows:
                raise CorruptShard(str(path), "does not match its name (split, shard or rows)")
            done[spec.relpath] = ShardInfo(path.name, rows, file_sha256(path), path.size())
    return done


def _refuse_foreign(root: Location) -> None:
    for entry in root.children():
        ours = entry.name in _OURS_AT_TOP or bool(TEMP_RE.fullmatch(entry.name))
        if not ours or (entry.name in SPLITS) != entry.is_dir():
            raise OutputDirError(
                f"{root} holds files that cdiflow did not write (e.g. {entry.name!r}); "
                "use an empty or new folder"
            )
    for split in SPLITS:
        if not (root / split).is_dir():
            continue
        for entry in (root / split).children():
            if not (SHARD_RE.fullmatch(entry.name) or TEMP_RE.fullmatch(entry.name)):
                raise OutputDirError(
                    f"{root} holds files that cdiflow did not write (e.g. "
                    f"{split}/{entry.name!r}); use an empty or new folder"
                )


def _shard_files(folder: Location) -> list[Location]:
    if not folder.is_dir():
        return []
    return [entry for entry in folder.children() if SHARD_RE.fullmatch(entry.name)]


def _manifest_fingerprint(root: Location) -> str | None:
    """The fingerprint that the manifest in ``root`` records, or None without one."""
    path = root / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return str(json.loads(path.read_text())["fingerprint"])
    except (ValueError, KeyError, TypeError) as exc:
        raise OutputDirError(f"{path}: unreadable ({exc}); use a new folder") from None


@contextlib.contextmanager
def locked_folder(root: str | Path | Location) -> Iterator[Path | str]:
    """Create ``root`` and its split folders, hold its lock, drop a killed run's temps.

    Refuses (``OutputDirError``) when another run holds the lock. The lock is an
    ``flock``: the kernel releases it when the holder dies, so a killed run never blocks
    the next one. Object storage: the folders only (split markers), no lock.
    """
    location = Location.parse(root)
    if not location.is_local:
        for folder in (location, *(location / split for split in SPLITS)):
            folder.mkdir()
        remove_temp_files(location)
        yield location.value
        return
    root = location.path
    root.mkdir(parents=True, exist_ok=True)
    with open(root / LOCK_NAME, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise OutputDirError(f"{root} is being written by another run") from None
        for split in SPLITS:
            (root / split).mkdir(exist_ok=True)
        remove_temp_files(root)
        yield root


def remove_temp_files(root: str | Path | Location) -> None:
    """Delete the temp files a killed writer left (only ever ours: fixed name pattern)."""
    root = Location.parse(root)
    for folder in (root, *(root / split for split in SPLITS)):
        if folder.is_dir():
            for entry in folder.children():
                if TEMP_RE.fullmatch(entry.name):
                    entry.remove()


def finish_folder(root: str | Path | Location) -> None:
    """After the manifest is written: the lock file is no longer needed (none on S3)."""
    root = Location.parse(root)
    if root.is_local:
        with contextlib.suppress(FileNotFoundError):
            os.remove(root.path / LOCK_NAME)


def write_dataset(
    root: str | Path | Location,
    config: DatasetConfig,
    fault: Callable[[ShardSpec, Iterator], Iterator] | None = None,
) -> Manifest:
    """Generate the data set ``config`` into folder ``root`` in this process, without Ray.

    Writes what ``cdiflow generate`` writes for the same config: the same shard names and
    bytes (one torch thread, as its writers use) and the same manifest, written last.
    Follows the same folder protocol: refuses foreign files or another data set
    (``OutputDirError``) before writing, keeps complete shards of an earlier run, holds
    the folder's lock while writing. Memory: one chunk of ``config.chunk_size`` patterns.

    Parameters
    ----------
    root : the data set folder (created if missing), or an object-storage URI.
    config : the data set; a subclass (e.g. ``GenerateConfig``) counts by its
        ``DatasetConfig`` fields only, as in ``cdiflow generate``.
    fault : tests only: ``fault(spec, chunks) -> chunks`` may alter the generated
        samples of each shard before they are written (the manifest then describes the
        altered files).

    Returns
    -------
    Manifest : what ``root/manifest.json`` now holds.
    """
    import torch

    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(DatasetConfig)}
    config = DatasetConfig(**fields).resolved()
    root = Location.parse(root)
    done = inspect_folder(root, config)
    specs = config.shard_specs()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the Ray writers: bytes independent of the thread count
    try:
        with locked_folder(root):
            infos = dict(done)
            for spec in specs:
                if spec.relpath not in infos:
                    hook = None if fault is None else (lambda c, spec=spec: fault(spec, c))
                    infos[spec.relpath] = generate_shard(root, config, spec, hook)
            by_split = {s: tuple(infos[p.relpath] for p in specs if p.split == s) for s in SPLITS}
            manifest = Manifest(config, by_split, __version__)
            write_manifest(root, manifest)
            finish_folder(root)
    finally:
        torch.set_num_threads(threads)
    return manifest
