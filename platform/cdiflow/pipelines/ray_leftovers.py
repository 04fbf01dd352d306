"""Local Ray processes that outlive a killed driver, and their cleanup on the next run.

``ray.init(address="local")`` starts the GCS, the raylet and its agents as children of the
driver. When the driver is SIGKILLed nobody stops them, and ``ray::DashboardAgent`` and
``ray::RuntimeEnvAgent`` ignore SIGTERM, so they stay forever. ``record()`` writes, right
after a local start, the driver's pid and its Ray descendants (pid and start time) to a
small JSON file in a per-user folder under the temp directory; ``clean()``, run before
the next local start, kills the recorded processes of every driver that is gone. The
start time guards against a reused pid: a process is killed only if both match.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path

import psutil

from cdiflow.formats.atomic import atomic_write_json


def records_dir() -> Path:
    """Where the records live (one folder per user, under the temp directory)."""
    return Path(tempfile.gettempdir()) / f"cdiflow-local-ray-{os.getuid()}"


def _identity(process) -> dict:
    return {"pid": process.pid, "started": process.create_time()}


def record() -> Path:
    """Record this driver and its descendants (call right after a local ``ray.init``)."""
    me = psutil.Process()
    children = []
    for child in me.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            children.append(_identity(child))
    path = records_dir() / f"{me.pid}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, {"driver": _identity(me), "children": children})
    return path


def _alive(identity: dict):
    """The process with this pid and start time, or None."""
    try:
        process = psutil.Process(identity["pid"])
        return process if abs(process.create_time() - identity["started"]) < 1e-3 else None
    except psutil.Error:
        return None


def clean() -> int:
    """Kill the recorded Ray processes of drivers that are gone; returns how many died."""
    killed = []
    for path in sorted(records_dir().glob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if _alive(data["driver"]) is not None:
            continue  # its driver still runs: not a leftover
        for identity in data["children"]:
            process = _alive(identity)
            if process is not None:
                with contextlib.suppress(psutil.Error):
                    process.kill()  # SIGKILL: the agents ignore SIGTERM
                    killed.append(process)
        path.unlink(missing_ok=True)
    psutil.wait_procs(killed, timeout=5)
    return len(killed)
