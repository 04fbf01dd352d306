"""``cdiflow generate`` refuses bad input with one line and exit code 2, writing nothing."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cdiflow.cli import main

SMALL = ["--num-patterns", "40", "--test-patterns", "4", "--shards", "2"]


def _refused(capsys, argv: list[str], words: str) -> str:
    assert main(["generate", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("cdiflow generate: error:") and err.count("\n") == 1, err
    assert words in err, err
    return err


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--num-patterns", "0"], "num_patterns"),
        (["--num-patterns", "40", "--shards", "0"], "shards"),
        (["--num-patterns", "40", "--test-patterns", "-3"], "test_patterns"),
        (["--num-patterns", "40", "--workers", "0"], "workers"),
    ],
)
def test_invalid_flags(capsys, tmp_path, argv, words):
    _refused(capsys, [*argv, "--out", str(tmp_path / "out")], words)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "yaml, words",
    [
        ("num_patternz: 100\n", "unknown key"),
        ("generator:\n  object_size: 0\n", "object_size must be positive"),
        ("generator:\n  object_size: 48\n", "does not fit"),
        ("generator:\n  semi_axes: [4.0, 14.0]\n", "do not fit the object box"),
        ("generator:\n  detector:\n    colour: red\n", "unknown key"),
        ("- just\n- a list\n", "mapping"),
    ],
)
def test_invalid_yaml(capsys, tmp_path, yaml, words):
    config = tmp_path / "gen.yaml"
    config.write_text(yaml)
    _refused(capsys, ["--config", str(config), "--out", str(tmp_path / "out")], words)
    assert not (tmp_path / "out").exists()


def test_folder_with_foreign_files(capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    _refused(capsys, [*SMALL, "--out", str(out)], "thesis.tex")
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_output_path_is_a_file(capsys, tmp_path):
    (tmp_path / "out").write_text("x")
    _refused(capsys, [*SMALL, "--out", str(tmp_path / "out")], "not a folder")


def test_foreign_shard_is_named(capsys, tmp_path):
    out = tmp_path / "out"
    (out / "train").mkdir(parents=True)
    (out / "manifest.json").write_text("{")
    _refused(capsys, [*SMALL, "--out", str(out)], "manifest.json: unreadable")
    (out / "manifest.json").unlink()
    pq.write_table(pa.table({"x": [1]}), out / "train" / "shard-00001.parquet")
    err = _refused(capsys, [*SMALL, "--out", str(out)], "shard-00001.parquet")
    assert "not a cdiflow shard" in err


def test_help_names_the_layout(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["generate", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert "--num-patterns" in out and "manifest.json" in out and "--shards" in out


def test_ray_job_entry_point_has_the_same_flags():
    import os
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": str(repo / "platform")}
    done = subprocess.run(
        [sys.executable, str(repo / "jobs" / "generate.py"), "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "--num-patterns" in done.stdout and "--address" in done.stdout
