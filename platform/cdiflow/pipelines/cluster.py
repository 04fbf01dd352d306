"""Reach a Ray cluster and an MLflow server, or fail within seconds with one line.

``ray.init`` against an address that does not answer can wait for a long time, and
MLflow's client retries a dead server for minutes. The jobs and the CLI call these
helpers first, so bad input (a wrong address, a server that is down) becomes a
``ClusterUnavailable`` (exit code 2) before any work starts.

``quiet_ray`` keeps Ray's own chatter off the console (into WORKSPACE/logs); every verb's
Ray start goes through ``connect``, which applies it.

Authentication: a cluster with token auth (the default since Ray 2.59, and what
``cluster/local.sh`` starts) accepts a client only when ``RAY_AUTH_MODE=token`` and the
token is in ``RAY_AUTH_TOKEN`` or the file ``RAY_AUTH_TOKEN_PATH``. Ray takes both from
the environment; ``connect`` does not touch them. An embedded local Ray turns token auth
on and writes ``~/.ray/auth_token`` unless ``RAY_AUTH_MODE=disabled`` (what unit tests
use). A refused token surfaces from ``ray.init`` after Ray's own GCS timeout (about
20 s), not within ``connect``'s ``timeout_s``.

Ray is imported inside the functions only: importing this module starts nothing.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path

from cdiflow.errors import ClusterUnavailable, ConfigError
from cdiflow.pipelines import ray_console, ray_leftovers

#: Default size of the embedded local Ray started when no address is given (bytes).
LOCAL_OBJECT_STORE_BYTES = 150 * 1024 * 1024
#: Default CPUs of the embedded local Ray: small, the machines are shared.
LOCAL_NUM_CPUS = 2
#: Ray Train's environment variable: how long a worker group may take to start.
TRAIN_START_TIMEOUT_ENV = "RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S"
#: cdiflow's default for it (seconds). Ray's own, 60 s, is too short on a small or busy
#: cluster, where workers wait for CPUs that other tasks hold or for a node to come up.
TRAIN_START_TIMEOUT_S = 300


def train_env_defaults() -> None:
    """Set cdiflow's defaults for Ray Train in this process's environment; set values win.

    Call it in the process that calls ``TorchTrainer.fit()``, just before: Ray Train
    copies ``RAY_TRAIN_WORKER_GROUP_START_TIMEOUT_S`` from there to its controller and
    workers, on a local Ray and on a cluster alike (so no ``runtime_env`` needs it).
    """
    os.environ.setdefault(TRAIN_START_TIMEOUT_ENV, str(TRAIN_START_TIMEOUT_S))


def quiet_ray(workspace: str | Path, say: Callable[[str], None] | None = None) -> Path:
    """Keep Ray's own chatter off the console; it goes to ``WORKSPACE/logs/ray-TIME.log``.

    Call before ``connect`` (the CLI does, unless ``--verbose``). The console keeps
    cdiflow's lines and bars, Ray Data's progress bars, and Ray's warnings and errors;
    Ray's INFO records, the lines its worker processes forward at INFO, its C++ core's
    raw absl lines and known noise go to the file only. Details in
    ``cdiflow.pipelines.ray_console``. The file is created when Ray first writes to it;
    ``say`` is called once with its path when Ray starts. Returns the path.
    """
    return ray_console.quiet(workspace, say)


@dataclasses.dataclass(frozen=True)
class ClusterInfo:
    """What ``connect`` reached.

    Attributes
    ----------
    address : str
        The GCS address connected to, or ``"local"`` for an embedded Ray.
    num_nodes : int
        Nodes alive when connected.
    resources : dict[str, float]
        ``ray.cluster_resources()`` at connection time (``CPU``, ``GPU``, ...).
    """

    address: str
    num_nodes: int
    resources: dict


def parse_address(address: str) -> tuple[str, int]:
    """Split a Ray address ``host:port`` or ``ray://host:port`` into host and port.

    Raises
    ------
    ConfigError
        When the address is not of that form (an ``http://`` address is the
        dashboard / Jobs API, which ``ray job submit`` takes but ``ray.init`` does not).
    """
    text = address.strip()
    if text.startswith(("http://", "https://")):
        raise ConfigError(
            f"Ray address {address!r} is a dashboard (Jobs API) URL; "
            "give the GCS address host:port (e.g. 127.0.0.1:6379)"
        )
    if text.startswith("ray://"):
        text = text[len("ray://") :]
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")  # IPv6 literal in brackets
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"Ray address {address!r} is not host:port")
    return host, int(port)


def probe_tcp(host: str, port: int, timeout_s: float) -> None:
    """Open and close a TCP connection to ``host:port``, retrying until ``timeout_s``.

    Retrying covers a cluster that is still starting; a closed port on a live host
    answers at once (connection refused), so the whole call stays within ``timeout_s``.

    Raises
    ------
    ClusterUnavailable
        When no connection succeeded before the deadline.
    """
    deadline = time.monotonic() + timeout_s
    last_error: OSError | None = None
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        try:
            with socket.create_connection((host, port), timeout=min(remaining, 2.0)):
                return
        except OSError as exc:
            last_error = exc
        time.sleep(min(0.25, max(deadline - time.monotonic(), 0)))
    reason = _short_reason(last_error) if last_error else "timed out"
    raise ClusterUnavailable(
        f"Ray cluster at {host}:{port} does not answer ({reason}) after {timeout_s:g} s"
    )


def connect(
    address: str | None = None,
    timeout_s: float = 5.0,
    *,
    num_cpus: int = LOCAL_NUM_CPUS,
    object_store_memory: int = LOCAL_OBJECT_STORE_BYTES,
    dashboard: bool = False,
) -> ClusterInfo:
    """Connect this process to Ray: to a cluster at ``address``, or to a small local one.

    Parameters
    ----------
    address : str or None
        ``host:port`` (or ``ray://host:port``) of the cluster's GCS, or ``"auto"``
        for the cluster started on this machine by ``ray start``. None falls back to
        ``RAY_ADDRESS`` (set inside ``ray job submit`` drivers); when that is unset
        too, an embedded local Ray is started with ``num_cpus`` CPUs, a capped object
        store and no dashboard.
    timeout_s : float
        How long the GCS port may take to accept a TCP connection (seconds).
    num_cpus, object_store_memory : int
        Size of the embedded local Ray (ignored when connecting to a cluster).
    dashboard : bool
        Start the embedded Ray's dashboard on 127.0.0.1 (a free port). Ray's State API
        lives there, and Train V2 needs it to release the placement group of a trial that
        Tune stopped early; without it the next trial waits forever.

    Returns
    -------
    ClusterInfo

    Raises
    ------
    ClusterUnavailable
        The address does not answer, or refuses this client (token auth).
    ConfigError
        The address is malformed.

    If this process is already connected, nothing is started and the current connection
    is described. Token authentication: see the module docstring.
    """
    import ray

    if ray.is_initialized():
        return _describe(os.environ.get("RAY_ADDRESS") or "local")
    target = address or os.environ.get("RAY_ADDRESS") or None
    if target is None or target == "local":
        return _start_local(num_cpus, object_store_memory, dashboard)
    if target != "auto":
        host, port = parse_address(target)
        probe_tcp(host, port, timeout_s)
    try:
        ray.init(address=target)
    except Exception as exc:  # Ray raises ConnectionError, RuntimeError, ...
        raise ClusterUnavailable(_init_failure(target, exc)) from None
    _after_init()
    return _describe(target)


def _start_local(num_cpus: int, object_store_memory: int, dashboard: bool) -> ClusterInfo:
    """Start the embedded local Ray (``connect`` without an address) and describe it."""
    import ray

    extra = {}
    if dashboard:
        port = _free_port()
        # Actors find the State API from RAY_API_SERVER_ADDRESS; without it they guess,
        # and fail when other Ray instances run on the same machine.
        extra = {
            "dashboard_host": "127.0.0.1",
            "dashboard_port": port,
            "runtime_env": {"env_vars": {"RAY_API_SERVER_ADDRESS": f"http://127.0.0.1:{port}"}},
        }
    ray_leftovers.clean()  # what a killed earlier driver left running
    # address="local": a new instance, even when `ray start` ran on this machine
    # (with no address, ray.init joins the newest such cluster it finds in /tmp/ray)
    ray.init(
        address="local",
        num_cpus=num_cpus,
        object_store_memory=object_store_memory,
        include_dashboard=dashboard,
        **extra,
    )
    ray_leftovers.record()
    _after_init()
    return _describe("local")


def check_mlflow(uri: str | None = None, timeout_s: float = 5.0) -> None:
    """Check that an MLflow tracking server answers ``GET /health`` within ``timeout_s``.

    Parameters
    ----------
    uri : str or None
        Tracking URI; None reads ``MLFLOW_TRACKING_URI``. Only ``http(s)://`` URIs are
        checked: a local store (``sqlite:///...``, a path) has no server to be down.
    timeout_s : float
        Connect and read timeout (seconds).

    Raises
    ------
    ClusterUnavailable
        No answer, a non-200 answer, or a refused ``Host`` header (HTTP 403: the
        server's ``--allowed-hosts`` does not list this host name).
    """
    uri = uri if uri is not None else os.environ.get("MLFLOW_TRACKING_URI")
    if not uri or urllib.parse.urlsplit(uri).scheme not in ("http", "https"):
        return
    health = uri.rstrip("/") + "/health"
    try:
        with urllib.request.urlopen(health, timeout=timeout_s) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (OSError, ValueError) as exc:  # URLError, timeouts, refused, bad host
        reason = _short_reason(getattr(exc, "reason", exc))
        raise ClusterUnavailable(
            f"MLflow server at {uri} does not answer ({reason}) within {timeout_s:g} s"
        ) from None
    if status == 403:
        raise ClusterUnavailable(
            f"MLflow server at {uri} refused the request (HTTP 403); if it runs "
            "elsewhere, start it with --allowed-hosts naming this host"
        )
    if status != 200:
        raise ClusterUnavailable(f"MLflow server at {uri} is not healthy (HTTP {status})")


def _after_init() -> None:
    """Apply ``quiet_ray`` (when active) to the Ray just connected to."""
    ray_console.after_init()


# Ports Ray's own components take by default on a local node: a dashboard port the OS
# hands out may be one of them (52365, the dashboard agent's, is in the ephemeral range),
# and then ray.init refuses to start.
_RAY_DEFAULT_PORTS = frozenset({6379, 8265, 10001, 52365})


def _free_port() -> int:
    """A free TCP port on 127.0.0.1 that none of Ray's default-port components claims."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _RAY_DEFAULT_PORTS:
            return port


def _describe(address: str) -> ClusterInfo:
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    return ClusterInfo(address=address, num_nodes=len(nodes), resources=ray.cluster_resources())


def _init_failure(address: str, exc: BaseException) -> str:
    """One line saying why ``ray.init`` failed, naming token auth when that was it."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 10:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    text = " ".join(f"{type(e).__name__} {e}" for e in chain)
    if "AuthenticationError" in text or "InvalidAuthToken" in text:
        return (
            f"Ray cluster at {address} refused this client: token auth is on; export "
            "RAY_AUTH_MODE=token and RAY_AUTH_TOKEN_PATH (or RAY_AUTH_TOKEN)"
        )
    return f"cannot connect to Ray cluster at {address}: {_short_reason(exc)}"


def _short_reason(exc: object) -> str:
    """The first line of an error, for a one-line message."""
    text = str(exc).strip().splitlines()
    return text[0] if text and text[0] else type(exc).__name__


def use_assigned_cpus() -> int:
    """Inside a Ray task or actor: torch's intra-op threads = the CPUs Ray gave it (>= 1).

    A worker process is reused for tasks of different sizes and starts with torch's own
    default (every core of the node), so two 1-CPU tasks on a 2-core node would each spin
    two threads; oversubscribed, the phasing engine ran 10x slower than cohere-core. Call
    it first thing in every Ray task or actor that computes. Returns the thread count.
    Outside a Ray worker (the local runner, ``--local``) torch's threads are left as
    they are.
    """
    import ray
    import torch

    if not ray.is_initialized() or ray.get_runtime_context().worker.mode != ray.WORKER_MODE:
        return torch.get_num_threads()
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1.0)
    threads = max(1, int(cpus + 1e-9))
    torch.set_num_threads(threads)
    return threads
