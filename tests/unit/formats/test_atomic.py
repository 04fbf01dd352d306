"""Atomic writes: the target is the old file or the whole new one; no temp file is left."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from cdiflow.formats.atomic import (
    atomic_open,
    atomic_path,
    atomic_write,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    temp_name_re,
)

CHUNK = 1 << 20  # 1 MiB


class WriterFailed(RuntimeError):
    pass


def _visible(folder: Path) -> list[str]:
    """What a reader listing ``folder`` for data files sees (hidden names excluded)."""
    return sorted(name for name in os.listdir(folder) if not name.startswith("."))


def test_writer_failing_half_way_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old content")
    payload = np.random.default_rng(0).bytes(16 * CHUNK)

    def write_half_then_fail(handle):
        handle.write(payload[: 8 * CHUNK])
        handle.flush()
        assert os.path.getsize(handle.name) == 8 * CHUNK  # really on disk, under the temp name
        raise WriterFailed("disk full, say")

    with pytest.raises(WriterFailed):
        atomic_write(target, write_half_then_fail)
    assert target.read_bytes() == b"old content"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_failing_path_writer_leaves_no_file_at_all(tmp_path):
    target = tmp_path / "model.pt"
    with pytest.raises(WriterFailed), atomic_path(target) as temp:
        temp.write_bytes(b"half a model")
        raise WriterFailed
    assert os.listdir(tmp_path) == []


def test_path_writer_that_writes_nothing_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError), atomic_path(tmp_path / "x.bin"):
        pass
    assert os.listdir(tmp_path) == []


def test_json_round_trip(tmp_path):
    data = {"chi2": [0.019, 0.005, 0.029], "name": "scan 54 · BaTiO₃", "nested": {"ok": True}}
    path = atomic_write_json(tmp_path / "result.json", data, indent=1)
    assert json.loads(path.read_text(encoding="utf-8")) == data
    assert path.read_text(encoding="utf-8") == json.dumps(data, indent=1) + "\n"
    atomic_write_json(path, {"where": tmp_path}, default=str)  # replaces it
    assert json.loads(path.read_text()) == {"where": str(tmp_path)}
    assert os.listdir(tmp_path) == ["result.json"]


def test_json_that_cannot_be_serialised_writes_nothing(tmp_path):
    with pytest.raises(TypeError):
        atomic_write_json(tmp_path / "bad.json", {"x": object()})
    assert os.listdir(tmp_path) == []


def test_bytes_text_and_open(tmp_path):
    assert atomic_write_bytes(tmp_path / "a", b"\x00\x01").read_bytes() == b"\x00\x01"
    assert atomic_write_text(tmp_path / "b", "x\ny\n").read_bytes() == b"x\ny\n"
    with atomic_open(tmp_path / "c.csv", "w", newline="") as handle:
        handle.write("a,b\r\n1,2\r\n")
    assert (tmp_path / "c.csv").read_bytes() == b"a,b\r\n1,2\r\n"
    with pytest.raises(ValueError, match="mode"), atomic_open(tmp_path / "d", "a"):
        pass
    assert sorted(os.listdir(tmp_path)) == ["a", "b", "c.csv"]


def test_temp_file_is_hidden_and_in_the_same_folder(tmp_path):
    """Same folder, so ``os.replace`` is a rename within one file system (atomic)."""
    target = tmp_path / "shard-00003.parquet"
    with atomic_path(target) as temp:
        assert temp.parent == target.parent
        assert temp.name.startswith(".") and temp.name.endswith(".tmp")
        assert temp_name_re(re.escape(target.name)).fullmatch(temp.name)
        assert not temp_name_re(r"manifest\.json").fullmatch(temp.name)
        temp.write_bytes(b"rows")
    seen = []
    atomic_write(tmp_path / "x.json", lambda handle: seen.append(Path(handle.name)))
    assert seen[0].parent == tmp_path and seen[0] != tmp_path / "x.json"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second  # two writers of one target never share a temp file
        first.write_bytes(b"a")
        second.write_bytes(b"b")
    assert target.read_bytes() == b"a"  # the last to finish wins, whole
    assert sorted(os.listdir(tmp_path)) == ["shard-00003.parquet", "x.json"]


@pytest.mark.parametrize("seed", range(8))
def test_a_listing_never_shows_a_partial_visible_file(tmp_path, seed):
    """Property: at every step of many writes (some failing part-way), a reader listing
    the folder sees only whole files, each holding its last completed content."""
    rng = np.random.default_rng(seed)
    names = [f"part-{k}.bin" for k in range(3)]
    complete: dict[str, bytes] = {}

    def check_listing():
        assert _visible(tmp_path) == sorted(complete)
        for name, content in complete.items():
            assert (tmp_path / name).read_bytes() == content

    for _ in range(6):
        name = names[rng.integers(len(names))]
        chunks = [rng.bytes(int(rng.integers(1, 64 << 10))) for _ in range(rng.integers(1, 6))]
        fail_at = int(rng.integers(len(chunks) + 1))  # == len(chunks): no failure

        def write(handle, chunks=chunks, fail_at=fail_at):
            for k, chunk in enumerate(chunks):
                if k == fail_at:
                    raise WriterFailed
                handle.write(chunk)
                handle.flush()
                check_listing()

        if fail_at < len(chunks):
            with pytest.raises(WriterFailed):
                atomic_write(tmp_path / name, write)
        else:
            atomic_write(tmp_path / name, write)
            complete[name] = b"".join(chunks)
        check_listing()
        assert _visible(tmp_path) == sorted(os.listdir(tmp_path))  # no temp left over
