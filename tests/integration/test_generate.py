"""Data set generation on a real local Ray: determinism, resumption after kills, the CLI."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from cdiflow.cli import main
from cdiflow.formats.dataset import TEMP_RE, validate_split
from cdiflow.formats.dataset_folder import write_dataset
from cdiflow.formats.layout import SPLITS, DatasetConfig
from cdiflow.pipelines.generate import generate_dataset

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
# 57 train (6 shards of 10, last 7), 3 val, 10 test; chunks of 4: 8 shards, 70 patterns.
CONFIG = DatasetConfig(seed=11, num_patterns=60, test_patterns=10, shards=6, chunk_size=4)
CLI_ARGS = ["--num-patterns", "60", "--test-patterns", "10", "--shards", "6", "--seed", "11"]
CLI_YAML = "chunk_size: 4\nseed: 5  # overridden by --seed\n"
RAY_ENV = {"RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` by relative path (hidden temp files included)."""
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, bytes]:
    """The data set's bytes generated in this process, one shard at a time, no Ray
    (``write_dataset``: one torch thread, as the Ray writers)."""
    root = tmp_path_factory.mktemp("reference")
    write_dataset(root, CONFIG)
    return _files(root)


@pytest.fixture(scope="module")
def local_ray():
    import ray

    saved = {k: os.environ.get(k) for k in RAY_ENV}
    os.environ.update(RAY_ENV)
    ray.init(num_cpus=2, object_store_memory=150 * 1024**2, include_dashboard=False)
    try:
        yield ray
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _cli_env() -> dict[str, str]:
    path = os.pathsep.join(filter(None, [str(REPO / "platform"), os.environ.get("PYTHONPATH")]))
    return {**os.environ, **RAY_ENV, "PYTHONPATH": path}


def _cli(args: list[str], config: Path, **kwargs) -> subprocess.Popen:
    config.write_text(CLI_YAML)
    command = [sys.executable, "-m", "cdiflow.cli", "generate", "--no-progress", "--config"]
    command += [str(config), *args]
    return subprocess.Popen(
        command, env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs
    )


def test_one_and_two_workers_write_the_same_bytes(local_ray, reference, tmp_path):
    one = generate_dataset(CONFIG, tmp_path / "one", workers=1, progress=False)
    two = generate_dataset(CONFIG, tmp_path / "two", workers=2, progress=False)
    assert (one.generated, two.generated, one.shards) == (70, 70, 8)
    assert _files(tmp_path / "one") == reference
    assert _files(tmp_path / "two") == reference


def test_readable_by_ray_data_and_validated(local_ray, tmp_path):
    shutil.rmtree(tmp_path, ignore_errors=True)
    root = tmp_path / "data"
    generate_dataset(CONFIG, root, workers=2, progress=False)
    row = local_ray.data.read_parquet(str(root / "train")).take(1)[0]
    assert row["modulus"].shape == (64, 64) and row["modulus"].dtype == np.float32
    assert row["amplitude"].shape == (32, 32) and row["phase"].shape == (32, 32)
    assert local_ray.data.read_parquet(str(root / "val")).count() == 3
    for split in SPLITS:
        assert validate_split(root, split).count(split) == CONFIG.count(split)


def _ray_workers() -> list[psutil.Process]:
    """This process's Ray worker processes (Ray titles them ``ray::...``)."""
    workers = []
    for child in psutil.Process().children(recursive=True):
        try:
            if child.cmdline()[:1] and child.cmdline()[0].startswith("ray::"):
                workers.append(child)
        except psutil.Error:
            continue
    return workers


def _open_temp_shard(process: psutil.Process, root: Path) -> Path | None:
    """The temp shard file under ``root`` that ``process`` is writing, if any."""
    try:
        files = process.open_files()
    except psutil.Error:
        return None
    for opened in files:
        path = Path(opened.path)
        if path.is_relative_to(root) and TEMP_RE.fullmatch(path.name):
            return path
    return None


def _kill_a_writer_mid_shard(root: Path, after: int, stop: threading.Event) -> Path | None:
    """SIGKILL a Ray writer in the middle of a shard, once ``after`` shards are complete.

    The writer is frozen (SIGSTOP) first and killed only if its temp file is still there,
    so it dies before the rename, mid-shard. Returns that temp file, or None if the run
    ended before a writer could be caught.
    """
    workers, listed = [], 0.0
    while not stop.is_set():
        if len(list(root.glob("*/shard-*.parquet"))) < after:
            time.sleep(0.01)
            continue
        if time.monotonic() - listed > 0.2:  # Ray replaces workers: list them again
            workers, listed = _ray_workers(), time.monotonic()
        for worker in workers:
            temp = _open_temp_shard(worker, root)
            if temp is None:
                continue
            try:
                worker.suspend()
                if temp.exists() and _open_temp_shard(worker, root) == temp:
                    worker.kill()
                    worker.wait(timeout=30)
                    return temp
                worker.resume()
            except psutil.Error:
                continue
    return None


def test_worker_killed_mid_shard_then_rerun_gives_the_same_bytes(local_ray, reference, tmp_path):
    root = tmp_path / "data"
    stop, killed = threading.Event(), []
    killer = threading.Thread(
        target=lambda: killed.append(_kill_a_writer_mid_shard(root, 2, stop)), daemon=True
    )
    killer.start()
    try:
        # Ray restarts the dead worker and retries its task, so this run normally finishes.
        first = generate_dataset(CONFIG, root, workers=2, progress=False)
    finally:
        stop.set()
        killer.join(timeout=60)
    assert killed and killed[0] is not None, "no writer was killed in the middle of a shard"
    assert first.generated == 70
    assert _files(root) == reference  # no temp file of the dead writer left behind
    (root / "manifest.json").unlink()  # as if the driver had died too: resume from shards
    again = generate_dataset(CONFIG, root, workers=2, progress=False)
    assert (again.kept_shards, again.generated) == (8, 0)
    assert _files(root) == reference


def _kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the driver; then make sure the Ray processes it started are gone too."""
    children = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    _, alive = psutil.wait_procs(children, timeout=30)
    for child in alive:  # Ray normally takes them down with the driver
        child.kill()


def test_driver_killed_after_first_shard_then_resumed(reference, tmp_path):
    root = tmp_path / "data"
    process = _cli([*CLI_ARGS, "--workers", "1", "--out", str(root)], tmp_path / "gen.yaml")
    deadline = time.monotonic() + 240
    while not list(root.glob("train/shard-*.parquet")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "no shard appeared"
        time.sleep(0.05)
    _kill_tree(process)
    assert not (root / "manifest.json").exists()
    partial = _files(root)
    visible = [name for name in partial if "shard-" in name and not name.endswith(".tmp")]
    assert 1 <= len(visible) < 8
    for name in visible:  # never a half shard under a shard's name
        assert partial[name] == reference[name], name
    rerun = _cli([*CLI_ARGS, "--out", str(root)], tmp_path / "gen.yaml")
    out, err = rerun.communicate(timeout=300)
    assert rerun.returncode == 0, err
    assert "resumed: kept" in out and str(root) in out and "patterns/s" in out
    assert _files(root) == reference


def test_complete_data_set_rerun_is_a_no_op(reference, tmp_path, capsys):
    root = tmp_path / "data"
    root.mkdir()
    for name, data in reference.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    (tmp_path / "gen.yaml").write_text(CLI_YAML)
    argv = ["generate", "--config", str(tmp_path / "gen.yaml"), *CLI_ARGS, "--out", str(root)]
    assert main(argv) == 0
    assert "already complete" in capsys.readouterr().out
    assert _files(root) == reference
