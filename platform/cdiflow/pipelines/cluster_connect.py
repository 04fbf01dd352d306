"""Minimal Ray connection for ``cdiflow train`` / ``jobs/train.py``.

Stand-in until ``cdiflow.pipelines.cluster.connect`` (branch ``cluster``) is on main:
with ``RAY_ADDRESS`` set, join that cluster; otherwise start a small local one bound to
127.0.0.1 with the dashboard off. Returns whether this process started Ray, so the caller
shuts down only what it started.
"""

from __future__ import annotations

import os


def connect(num_cpus: int | None = None, object_store_mb: int = 200) -> bool:
    """Connect to RAY_ADDRESS or start a local Ray; True when a local Ray was started here."""
    import ray

    try:
        from cdiflow.pipelines.cluster import connect as shared_connect  # branch ``cluster``
    except ImportError:
        shared_connect = None
    if ray.is_initialized():
        return False
    cpus = num_cpus or os.cpu_count() or 1
    if shared_connect is not None:
        info = shared_connect(num_cpus=cpus, object_store_memory=object_store_mb * 1024 * 1024)
        return info.address == "local"
    if os.environ.get("RAY_ADDRESS"):
        ray.init(address=os.environ["RAY_ADDRESS"])
        return False
    ray.init(
        num_cpus=cpus,
        include_dashboard=False,
        object_store_memory=object_store_mb * 1024 * 1024,
        _node_ip_address="127.0.0.1",
    )
    return True


def disconnect(started: bool) -> None:
    """Shut down the local Ray this process started (a joined cluster is left running)."""
    import ray

    if started and ray.is_initialized():
        ray.shutdown()
