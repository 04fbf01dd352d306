"""Failure paths of cdiflow.pipelines.cluster: no Ray and no MLflow server runs here.

A closed port on 127.0.0.1 refuses at once, so each check must fail within seconds
with a one-line ClusterUnavailable (exit code 2 in the CLI), not hang.
"""

from __future__ import annotations

import http.server
import socket
import threading
import time

import pytest

from cdiflow.errors import ClusterUnavailable, ConfigError, InputError
from cdiflow.pipelines import cluster


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server():
    """A TCP server that accepts connections and never answers."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept_forever() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                held.append(conn)
            except OSError:
                continue

    thread = threading.Thread(target=accept_forever, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=2)
    for conn in held:
        conn.close()
    server.close()


@pytest.fixture
def http_status_server(request):
    """An HTTP server on 127.0.0.1 that answers every GET with one status code."""
    status = request.param

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 - http.server's name
            self.send_response(status)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_error_is_input_error_for_exit_code_2():
    assert issubclass(ClusterUnavailable, InputError)


@pytest.mark.parametrize(
    "address, expected",
    [
        ("127.0.0.1:6379", ("127.0.0.1", 6379)),
        ("ray://head.example:10001", ("head.example", 10001)),
        ("[::1]:6379", ("::1", 6379)),
    ],
)
def test_parse_address(address, expected):
    assert cluster.parse_address(address) == expected


@pytest.mark.parametrize("address", ["127.0.0.1", "host:notaport", ":6379", "h:70000"])
def test_parse_address_rejects_malformed(address):
    with pytest.raises(ConfigError, match="not host:port"):
        cluster.parse_address(address)


def test_parse_address_rejects_dashboard_url():
    with pytest.raises(ConfigError, match="dashboard"):
        cluster.parse_address("http://127.0.0.1:8265")


def test_connect_to_closed_port_fails_fast_with_one_line():
    import ray  # imported first so that the timing below covers only the call

    port = closed_port()
    start = time.monotonic()
    with pytest.raises(ClusterUnavailable) as info:
        cluster.connect(f"127.0.0.1:{port}", timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert elapsed < 5.0
    message = str(info.value)
    assert "\n" not in message
    assert f"127.0.0.1:{port}" in message and "does not answer" in message
    assert not ray.is_initialized()


def test_connect_uses_ray_address_env_when_no_address(monkeypatch):
    port = closed_port()
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    with pytest.raises(ClusterUnavailable, match=str(port)):
        cluster.connect(None, timeout_s=0.5)


def test_probe_times_out_on_unroutable_address_within_timeout():
    # TEST-NET-1 (RFC 5737) never answers; depending on the network it times out or
    # is refused as unreachable, and either way the probe gives up by its deadline.
    start = time.monotonic()
    with pytest.raises(ClusterUnavailable, match="does not answer"):
        cluster.probe_tcp("192.0.2.1", 6379, timeout_s=1.0)
    assert time.monotonic() - start < 4.0


def test_check_mlflow_closed_port_fails_fast():
    port = closed_port()
    start = time.monotonic()
    with pytest.raises(ClusterUnavailable) as info:
        cluster.check_mlflow(f"http://127.0.0.1:{port}", timeout_s=2.0)
    assert time.monotonic() - start < 5.0
    message = str(info.value)
    assert "\n" not in message
    assert "MLflow server" in message and "does not answer" in message


def test_check_mlflow_silent_server_times_out(silent_server):
    start = time.monotonic()
    with pytest.raises(ClusterUnavailable, match="does not answer"):
        cluster.check_mlflow(f"http://127.0.0.1:{silent_server}", timeout_s=1.0)
    assert time.monotonic() - start < 5.0


@pytest.mark.parametrize(
    "http_status_server, expected",
    [(503, "not healthy \\(HTTP 503\\)"), (403, "HTTP 403.*--allowed-hosts")],
    indirect=["http_status_server"],
)
def test_check_mlflow_unhealthy_status(http_status_server, expected):
    with pytest.raises(ClusterUnavailable, match=expected):
        cluster.check_mlflow(f"http://127.0.0.1:{http_status_server}/", timeout_s=2.0)


@pytest.mark.parametrize("http_status_server", [200], indirect=True)
def test_check_mlflow_healthy_server_passes(http_status_server):
    assert cluster.check_mlflow(f"http://127.0.0.1:{http_status_server}", timeout_s=2.0) is None


def test_check_mlflow_reads_env(monkeypatch):
    port = closed_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    with pytest.raises(ClusterUnavailable, match=str(port)):
        cluster.check_mlflow(None, timeout_s=1.0)


@pytest.mark.parametrize("uri", ["sqlite:///workspace/mlflow.db", "./mlruns", ""])
def test_check_mlflow_skips_local_stores(uri, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert cluster.check_mlflow(uri or None, timeout_s=0.1) is None


def test_dashboard_port_skips_ray_default_ports(monkeypatch):
    """The OS may hand out 52365, the dashboard agent's default: ray.init then refuses."""
    handed_out = iter([52365, 6379, 41234])

    class Socket:
        def __init__(self):
            self.port = next(handed_out)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

        def bind(self, address):
            pass

        def getsockname(self):
            return ("127.0.0.1", self.port)

    monkeypatch.setattr(cluster.socket, "socket", Socket)
    assert cluster._free_port() == 41234
