"""Where a data set lives: a local folder, or an object-storage URI read through pyarrow.fs.

``pathlib.Path`` collapses a URI (``Path("s3://b/x")`` is ``s3:/b/x``), so a data set
argument is parsed once, by ``Location.parse``: text with a scheme (``s3://``, ``gs://``,
``abfss://``, ``hdfs://``, ...) stays a URI string, anything else (``file://`` URIs
included) becomes a ``Path``. ``Location.value`` is that normalised form, and it is what
the data set functions hand back: a local data set's shards are ``Path`` objects as
before, a bucket's are URI strings. ``location_arg`` is the argparse ``type`` of every
data set flag.

A local location uses pathlib and ``cdiflow.formats.atomic`` exactly as before (temp name
in the same folder, fsync, ``os.replace``). A URI goes through
``pyarrow.fs.FileSystem.from_uri``, resolved on first use and shared by the location's
children. On object storage a PUT is atomic already, so ``writing`` lets the writer fill
a local temp file and uploads it whole when the block ends cleanly: a reader sees the
whole object or none, and a writer that fails uploads nothing. Object storage has no
folders and no locks: a "folder" exists once an object (or the marker that ``mkdir``
creates) lies under it.

Credentials and endpoints come from pyarrow's usual sources: ``AWS_ACCESS_KEY_ID``,
``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``, ``AWS_ENDPOINT_URL``, or options in the
URI's query (``s3://bucket/prefix?endpoint_override=host:9000&scheme=http``; children
keep the query). Failures of the storage itself raise ``StorageError``; a missing object
raises ``FileNotFoundError``, as a missing local file does. Only the standard library is
imported at module level (pyarrow when a URI is first used), so the CLI's parser stays
fast.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from cdiflow.errors import StorageError
from cdiflow.formats.atomic import atomic_path, atomic_write_bytes, atomic_write_text

__all__ = ["Location", "location_arg"]

_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*)://")


class Location:
    """A local path or an object-storage URI, with the few file operations a data set needs.

    Build one with ``Location.parse``. Equal when their ``value`` is equal.
    """

    __slots__ = ("_filesystem", "_fs_path", "_type", "value")

    def __init__(self, value: str | Path, _filesystem: Any = None, _fs_path: str | None = None):
        self.value: str | Path = value  # Path: local; str: a URI
        self._filesystem = _filesystem
        self._fs_path = _fs_path
        self._type = None  # a pyarrow FileType known from a listing (URIs only)

    @classmethod
    def parse(cls, text: str | os.PathLike | Location) -> Location:
        """``text`` as a location: a URI stays a string (no trailing slash), else a ``Path``.

        ``file:///x`` is the local ``Path("/x")``; a ``Location`` is returned as is.
        """
        if isinstance(text, Location):
            return text
        if isinstance(text, os.PathLike):
            return cls(Path(text))
        if not isinstance(text, str):
            raise TypeError(f"a data location is a str or a path, got {type(text).__name__}")
        match = _SCHEME.match(text)
        if match is None:
            return cls(Path(text))
        parts = urllib.parse.urlsplit(text)
        if match.group(1).lower() == "file":
            return cls(Path(urllib.parse.unquote(parts.path)))
        return cls(urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/"))))

    # --- what it is ---------------------------------------------------------------------
    @property
    def is_local(self) -> bool:
        return isinstance(self.value, Path)

    @property
    def path(self) -> Path:
        """The local path; ``ValueError`` for a URI."""
        if not isinstance(self.value, Path):
            raise ValueError(f"{self.value} is not a local path")
        return self.value

    @property
    def name(self) -> str:
        if isinstance(self.value, Path):
            return self.value.name
        return urllib.parse.urlsplit(self.value).path.rsplit("/", 1)[-1]

    @property
    def parent(self) -> Location:
        if isinstance(self.value, Path):
            return Location(self.value.parent)
        parts = urllib.parse.urlsplit(self.value)
        return Location(urllib.parse.urlunsplit(parts._replace(path=parts.path.rsplit("/", 1)[0])))

    def __truediv__(self, part: str) -> Location:
        if isinstance(self.value, Path):
            return Location(self.value / part)
        parts = urllib.parse.urlsplit(self.value)
        value = urllib.parse.urlunsplit(parts._replace(path=f"{parts.path}/{part}"))
        fs_path = None if self._fs_path is None else f"{self._fs_path}/{part}"
        return Location(value, self._filesystem, fs_path)

    def absolute(self) -> Location:
        return Location(self.value.absolute()) if isinstance(self.value, Path) else self

    def expanduser(self) -> Location:
        return Location(self.value.expanduser()) if isinstance(self.value, Path) else self

    def resolve(self) -> Location:
        return Location(self.value.resolve()) if isinstance(self.value, Path) else self

    def __str__(self) -> str:
        return str(self.value)

    def __repr__(self) -> str:
        return f"Location({self.value!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Location) and other.value == self.value

    def __hash__(self) -> int:
        return hash(self.value)

    # --- pyarrow ------------------------------------------------------------------------
    @property
    def filesystem(self):
        """The ``pyarrow.fs.FileSystem`` (``LocalFileSystem`` for a local path)."""
        self._resolve()
        return self._filesystem

    @property
    def fs_path(self) -> str:
        """The path inside ``filesystem`` (``bucket/prefix`` for ``s3://bucket/prefix``)."""
        self._resolve()
        return self._fs_path

    def for_arrow(self) -> tuple[str | Path, Any]:
        """``(where, filesystem)`` for pyarrow readers: ``(path, None)`` when local."""
        if isinstance(self.value, Path):
            return self.value, None
        return self.fs_path, self.filesystem

    def _resolve(self) -> None:
        if self._filesystem is not None:
            return
        import pyarrow.fs

        if isinstance(self.value, Path):
            self._filesystem, self._fs_path = pyarrow.fs.LocalFileSystem(), str(self.value)
            return
        with self._storage("open"):
            self._filesystem, self._fs_path = pyarrow.fs.FileSystem.from_uri(self.value)

    @contextlib.contextmanager
    def _storage(self, action: str) -> Iterator[None]:
        """Turn the storage's own errors into ``StorageError`` (not a missing object)."""
        import pyarrow as pa

        try:
            yield
        except FileNotFoundError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise StorageError(f"{self.value}: cannot {action} ({exc})") from None

    def _file_type(self):
        import pyarrow.fs

        if self._type is None:
            with self._storage("read"):
                self._type = self.filesystem.get_file_info(self.fs_path).type
        return self._type, pyarrow.fs.FileType

    # --- reading ------------------------------------------------------------------------
    def exists(self) -> bool:
        if isinstance(self.value, Path):
            return self.value.exists()
        kind, types = self._file_type()
        return kind != types.NotFound

    def is_dir(self) -> bool:
        if isinstance(self.value, Path):
            return self.value.is_dir()
        kind, types = self._file_type()
        return kind == types.Directory

    def is_file(self) -> bool:
        if isinstance(self.value, Path):
            return self.value.is_file()
        kind, types = self._file_type()
        return kind == types.File

    def size(self) -> int:
        """The file's size in bytes."""
        if isinstance(self.value, Path):
            return self.value.stat().st_size
        with self._storage("read"):
            return int(self.filesystem.get_file_info(self.fs_path).size)

    def children(self) -> list[Location]:
        """The entries of this folder, sorted by name (a missing folder: ``FileNotFoundError``)."""
        if isinstance(self.value, Path):
            return [Location(p) for p in sorted(self.value.iterdir())]
        import pyarrow.fs

        with self._storage("list"):
            infos = self.filesystem.get_file_info(pyarrow.fs.FileSelector(self.fs_path))
        out = []
        for info in sorted(infos, key=lambda i: i.base_name):
            child = self / info.base_name
            child._type = info.type
            out.append(child)
        return out

    def open_input(self) -> IO[bytes]:
        """A binary stream to read the file from (close it, e.g. with ``with``)."""
        if isinstance(self.value, Path):
            return open(self.value, "rb")
        with self._storage("read"):
            return self.filesystem.open_input_stream(self.fs_path)

    def read_bytes(self) -> bytes:
        if isinstance(self.value, Path):
            return self.value.read_bytes()
        with self.open_input() as source, self._storage("read"):
            return source.read()

    def read_text(self) -> str:
        if isinstance(self.value, Path):
            return self.value.read_text()
        return self.read_bytes().decode("utf-8")

    # --- writing ------------------------------------------------------------------------
    def mkdir(self) -> None:
        """Create this folder and its parents (object storage: a marker object)."""
        if isinstance(self.value, Path):
            self.value.mkdir(parents=True, exist_ok=True)
            return
        with self._storage("create"):
            self.filesystem.create_dir(self.fs_path, recursive=True)
        self._type = None

    def remove(self) -> None:
        """Delete this file; nothing if it is already gone."""
        if isinstance(self.value, Path):
            self.value.unlink(missing_ok=True)
            return
        with contextlib.suppress(FileNotFoundError), self._storage("delete"):
            self.filesystem.delete_file(self.fs_path)
        self._type = None

    @contextlib.contextmanager
    def writing(self) -> Iterator[Path]:
        """Yield a local temp path to write the file at; a clean exit publishes it whole.

        Local: ``atomic_path`` (temp name in the same folder, fsync, rename). Object
        storage: a file in a private temp folder, uploaded in one PUT (or a multipart
        upload, which appears only when complete) after the block; if the block raises,
        nothing is uploaded. Either way the temp file is gone afterwards.
        """
        if isinstance(self.value, Path):
            with atomic_path(self.value) as temp:
                yield temp
            return
        with tempfile.TemporaryDirectory(prefix="cdiflow-upload-") as folder:
            temp = Path(folder) / self.name
            yield temp
            with self._storage("write"):
                with open(temp, "rb") as source, self._output() as sink:
                    sink.upload(source)
        self._type = None

    def write_bytes(self, data: bytes) -> None:
        """Write ``data`` as this file, atomically (local: ``atomic_write_bytes``)."""
        if isinstance(self.value, Path):
            atomic_write_bytes(self.value, data)
            return
        with self._storage("write"), self._output() as sink:
            sink.write(data)
        self._type = None

    def write_text(self, text: str) -> None:
        """Write ``text`` (UTF-8) as this file, atomically (local: ``atomic_write_text``)."""
        if isinstance(self.value, Path):
            atomic_write_text(self.value, text)
            return
        self.write_bytes(text.encode("utf-8"))

    def _output(self):
        return self.filesystem.open_output_stream(self.fs_path, compression=None)


def location_arg(text: str) -> str | Path:
    """The argparse ``type`` of a data set flag: ``Location.parse(text).value``."""
    return Location.parse(text).value
