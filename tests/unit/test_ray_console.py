"""Ray's chatter stays off the console and goes to WORKSPACE/logs (``cluster.quiet_ray``).

The console keeps Ray's warnings and errors; Ray's INFO records (driver and workers), raw
absl lines of its C++ core and known noise go to the log file only. One real Ray job in
a subprocess (its console is what a person sees), plus the line rules without Ray.
"""

from __future__ import annotations

import io
import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from cdiflow.pipelines import ray_console

REPO = Path(__file__).resolve().parents[2]

MUTEX = "[mutex.cc : 452] RAW: Lock blocking 0x600002cd0cd8   @"
PG_CLEANER = (
    "Failed to query Ray Train Controller actor state. "
    "State API may be temporarily unavailable. Continuing to monitor."
)


@pytest.mark.parametrize(
    "line, shown",
    [
        ("2026-12-01 09:16:00,123\tINFO worker.py:2038 -- Started a local Ray instance.", False),
        ("2026-12-01 09:16:00,123\tDEBUG x.py:1 -- detail", False),
        ("2026-12-01 09:16:00,123\tWARNING x.py:1 -- object store falls back to /tmp", True),
        ("2026-12-01 09:16:00,123\tERROR x.py:1 -- a task failed", True),
        ("2026/12/01 09:16:00 INFO mlflow.tracking: View run quickstart", False),
        ("[2026-12-01 09:16:00,123 I 1234 5678] core_worker.cc:12: Constructing", False),
        ("[2026-12-01 09:16:00,123 E 1234 5678] core_worker.cc:12: lost an object", True),
        ("I1201 09:16:00.123456  1234 chttp2_transport.cc:12] keepalive", False),
        ("W1201 09:16:00.123456  1234 chttp2_transport.cc:12] slow peer", True),
        (MUTEX, False),
        ("    @ 0x14b66fee30db absl::lts_20230802::DebugOnlyDeadlockCheck()", False),
        (PG_CLEANER, False),
        ("\x1b[36m" + MUTEX + "\x1b[0m", False),
        ("Started training worker group of size 1", False),  # a bare INFO message
        ("Registered dataset logger for dataset train_7_0", False),
        ("/x/y.py:15: UserWarning: TypedStorage is deprecated", True),
        ("Worker 0 died unexpectedly; restarting from the latest checkpoint", True),
        ("ValueError: shapes do not match", True),
    ],
)
def test_which_forwarded_lines_reach_the_console(line, shown):
    assert ray_console.console_lines([line]) == ([line] if shown else [])


def test_a_traceback_shows_whole_and_a_ray_tqdm_bar_passes():
    from ray.experimental.tqdm_ray import RAY_TQDM_MAGIC

    lines = [
        "Started training worker group of size 1",
        "Traceback (most recent call last):",
        '  File "/x/train.py", line 3, in step',
        "    loss.backward()",
        "RuntimeError: out of range",
        "2026-12-01 09:16:00,123\tINFO x.py:1 -- next record",
        '{"__magic__": "' + RAY_TQDM_MAGIC + '"}',
    ]
    assert ray_console.console_lines(lines) == lines[1:5] + lines[6:]


def ray_consoles() -> list[logging.StreamHandler]:
    """Ray's console handlers on the driver (loggers ``ray`` and ``ray.data``)."""
    import ray.data  # noqa: F401  (configures ray.data's logger)

    return [
        h
        for name in ray_console.DRIVER_LOGGERS
        for h in logging.getLogger(name).handlers
        if isinstance(h, logging.StreamHandler) and not isinstance(h, logging.FileHandler)
    ]


def test_quiet_then_restore_in_this_process(tmp_path):
    console = io.StringIO()
    handlers = ray_consoles()
    assert handlers
    # what Ray's handlers print; set the attribute, not setStream(), which flushes the old
    # stream: after other tests that can be a capture pytest has already closed
    streams = [h.stream for h in handlers]
    for h in handlers:
        h.stream = console
    try:
        path = ray_console.quiet(tmp_path / "ws")
        try:
            assert path.parent == (tmp_path / "ws" / "logs").absolute()
            assert re.fullmatch(r"ray-\d{8}-\d{6}-\d+\.log", path.name)
            assert not path.parent.exists()  # nothing written until Ray writes
            logging.getLogger("ray").info("driver-info-marker")
            logging.getLogger("ray").warning("driver-warning-marker")
            logging.getLogger("ray.data").info("data-info-marker")
            assert "driver-warning-marker" in console.getvalue()
            assert "info-marker" not in console.getvalue()
        finally:
            ray_console.restore()
        text = path.read_text()
        assert "driver-info-marker" in text and "data-info-marker" in text
        assert "driver-warning-marker" in text
        logging.getLogger("ray").info("after-restore-marker")
        assert "after-restore-marker" in console.getvalue()
        assert "after-restore-marker" not in path.read_text()
        assert ray_console.log_path() is None
    finally:
        for handler, stream in zip(handlers, streams, strict=True):
            handler.stream = stream


JOB = r"""
import logging, sys, time, warnings
from pathlib import Path

import ray

from cdiflow.pipelines.cluster import connect, quiet_ray

log = quiet_ray(Path(sys.argv[1]), say=lambda line: print(line, file=sys.stderr))
connect("local", num_cpus=1)


@ray.remote
def chatter(raw, noise):
    logging.getLogger("ray").info("marker-ray-info from a worker")
    logging.getLogger("ray.data").info("marker-data-info from a worker")
    print(raw, file=sys.stderr)  # absl's raw line
    print(noise, file=sys.stderr)  # Ray Train's placement-group cleaner
    print("2026-12-01 09:00:00,000\tINFO m.py:1 -- marker-formatted-info", file=sys.stderr)
    print("2026-12-01 09:00:00,000\tWARNING m.py:1 -- marker-formatted-warning", file=sys.stderr)
    logging.getLogger("ray").warning("marker-ray-warning: could not reach the thing")
    warnings.warn("marker-user-warning")
    print("marker-stdout from a worker")
    sys.stdout.flush()
    sys.stderr.flush()
    return 42


assert ray.get(chatter.remote(sys.argv[2], sys.argv[3])) == 42
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    text = log.read_text() if log.exists() else ""
    if "marker-user-warning" in text and "marker-stdout" in text:
        break
    time.sleep(0.2)
time.sleep(1.0)  # the console gets the same batches right after the file
ray.shutdown()
print("job done", log)
"""


def test_a_real_ray_job_keeps_info_off_the_console_and_in_the_workspace_log(tmp_path):
    workspace = tmp_path / "ws"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env.update(
        RAY_AUTH_MODE="disabled",  # no token written to ~/.ray
        RAY_USAGE_STATS_ENABLED="0",
        HOME=str(tmp_path),
        PYTHONPATH=str(REPO / "platform"),
    )
    result = subprocess.run(
        [sys.executable, "-c", JOB, str(workspace), MUTEX, PG_CLEANER],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=90,
    )
    console = result.stdout + result.stderr
    assert result.returncode == 0, console[-4000:]
    logs = sorted((workspace / "logs").glob("ray-*.log"))
    assert len(logs) == 1, logs
    text = logs[0].read_text()
    assert f"Ray's own log lines: {logs[0]}" in console
    assert "job done" in console
    # chatter: in the file, not on the console
    for chatter in (
        "Started a local Ray instance",  # the driver's own INFO record
        "marker-ray-info",
        "marker-data-info",
        "marker-formatted-info",
        "mutex.cc",
        "Failed to query Ray Train Controller actor state",
        "marker-stdout",
    ):
        assert chatter in text, chatter
        assert chatter not in console, chatter
    assert not re.search(r"\tINFO ", console), console[-4000:]
    # warnings: on the console (and in the file)
    for warning in ("marker-formatted-warning", "marker-ray-warning", "marker-user-warning"):
        assert warning in console, (warning, console[-4000:])
        assert warning in text, warning
    assert "(chatter pid=" in text  # which worker wrote it


RAY_VERBS = {"generate", "quickstart", "reconstruct", "train", "tune"}  # the verbs with --verbose


def test_every_verb_that_starts_ray_sets_up_the_console_through_common():
    commands = REPO / "platform" / "cdiflow" / "commands"
    calling = {
        p.stem.replace("_", "-")
        for p in commands.glob("*.py")
        if p.stem != "common" and "ray_console(args)" in p.read_text()
    }
    assert calling == RAY_VERBS


@pytest.mark.parametrize("verbose", [False, True])
def test_quickstart_goes_quiet_before_ray_unless_verbose(monkeypatch, tmp_path, verbose):
    from cdiflow.cli import main
    from cdiflow.pipelines import cluster, quickstart

    calls = []

    def fake_quiet(workspace, say=None):
        calls.append(("quiet", Path(workspace)))
        return Path(workspace) / "logs" / "ray.log"

    def fake_run(workspace, *args, **kwargs):
        calls.append(("run", Path(workspace)))
        return quickstart.QuickstartOutcome(Path(workspace), Path("r.html"), "1", False, {}, {})

    monkeypatch.setattr(cluster, "quiet_ray", fake_quiet)
    monkeypatch.setattr(quickstart, "run_quickstart", fake_run)
    workspace = tmp_path / "ws"
    argv = ["quickstart", "--workspace", str(workspace)] + (["--verbose"] if verbose else [])
    assert main(argv) == 0
    expected = [("run", workspace)] if verbose else [("quiet", workspace), ("run", workspace)]
    assert calls == expected


def test_the_cli_restores_the_console_when_a_verb_returns(monkeypatch, tmp_path):
    from cdiflow.cli import main
    from cdiflow.pipelines import quickstart

    during = {}

    def quiet_filters() -> list:
        return [f for h in ray_consoles() for f in h.filters if type(f).__name__ == "_WarningsOnly"]

    def fake_run(workspace, *args, **kwargs):
        during["log"] = ray_console.log_path()
        during["filtered"] = bool(quiet_filters())
        return quickstart.QuickstartOutcome(Path(workspace), Path("r.html"), "1", False, {}, {})

    monkeypatch.setattr(quickstart, "run_quickstart", fake_run)
    assert main(["quickstart", "--workspace", str(tmp_path / "ws")]) == 0
    assert during["log"].parent == (tmp_path / "ws" / "logs").absolute()
    assert during["filtered"]
    assert ray_console.log_path() is None
    assert not quiet_filters()
