"""Atomic file writes: a reader sees the old file or the whole new one, never a part.

Every file cdiflow writes goes through here. The content goes to a temp file in the
target's own folder (same file system, so the rename is atomic), named
``.{name}.{12 hex digits}.tmp``: hidden, so a reader listing ``*.parquet`` or ``*.json``
never sees it, and recognisable (``temp_name_re``), so a killed writer's leftovers can be
removed. The temp file is fsynced and renamed over the target with ``os.replace``, then
the folder is fsynced (best effort) so that the rename survives a power cut. On any
exception the temp file is removed and the target is left as it was.

The folder must exist (nothing is created here). Only the standard library is imported:
writers that need a path (``torch.save``, ``pyarrow.parquet.write_table``, ``h5py.File``,
``Figure.savefig``) write to the path that ``atomic_path`` yields.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = [
    "atomic_open",
    "atomic_path",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "fsync_dir",
    "temp_name_re",
]


def temp_name_re(names: str) -> re.Pattern[str]:
    """The pattern of the temp names used for targets whose names match ``names``.

    Parameters
    ----------
    names : a regular expression for the final file names, e.g. ``r"shard-\\d{5}\\.parquet"``.

    Returns
    -------
    re.Pattern : use with ``fullmatch`` on a file name (not a path).
    """
    return re.compile(rf"\.(?:{names})\.[0-9a-f]{{12}}\.tmp")


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temp path next to ``path``; on a clean exit it replaces ``path``.

    The caller writes (and closes) a file at the yielded path. On leaving the block the
    file is fsynced, renamed to ``path`` and the folder fsynced; if the block raises (or
    wrote no file), the temp file is removed and ``path`` is untouched.

    Examples
    --------
    >>> with atomic_path(folder / "model.pt") as temp:  # doctest: +SKIP
    ...     torch.save(state, temp)
    """
    path = Path(path)
    temp = _temp_path(path)
    try:
        yield temp
        _fsync_file(temp)
        os.replace(temp, path)
    except BaseException:
        temp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO]:
    """``open(path, mode)`` for writing, atomically: see ``atomic_path``.

    Parameters
    ----------
    path : the target file.
    mode : a write mode, ``"wb"`` (default) or ``"w"``.
    **open_kwargs : passed to ``open`` (``encoding``, ``newline``, ...).
    """
    if mode not in ("w", "wb", "wt"):
        raise ValueError(f"atomic_open writes a new file: mode 'w', 'wt' or 'wb', got {mode!r}")
    with atomic_path(path) as temp, open(temp, mode, **open_kwargs) as handle:
        yield handle


def atomic_write(
    path: str | os.PathLike, write: Callable[[IO], Any], mode: str = "wb", **open_kwargs: Any
) -> Path:
    """Call ``write(file)`` on an ``atomic_open`` file; returns ``path``.

    If ``write`` raises half-way, the exception propagates, the old content of ``path``
    (or its absence) stays, and no temp file is left.
    """
    with atomic_open(path, mode, **open_kwargs) as handle:
        write(handle)
    return Path(path)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    return atomic_write(path, lambda handle: handle.write(data))


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> Path:
    """Write ``text`` to ``path`` atomically (``encoding``, no newline translation)."""
    return atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(
    path: str | os.PathLike,
    obj: Any,
    *,
    indent: int | None = 2,
    sort_keys: bool = False,
    default: Callable[[Any], Any] | None = None,
) -> Path:
    """Write ``json.dumps(obj, ...)`` and a final newline to ``path`` atomically.

    ``obj`` is serialised before anything is written, so an object that is not JSON
    (``TypeError``) leaves no file. ``indent``, ``sort_keys`` and ``default`` are
    ``json.dumps``'s.
    """
    text = json.dumps(obj, indent=indent, sort_keys=sort_keys, default=default)
    return atomic_write_text(path, text + "\n")


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)  # FileNotFoundError if the writer wrote nothing
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable; best effort (some file systems refuse)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
