"""cluster/local.sh end to end: a head plus one worker node on this machine, token auth on.

A client with the token sees both nodes (through cdiflow.pipelines.cluster.connect); a
client without it is refused; `stop` leaves no process of the cluster behind, also
when an assertion fails on the way (try/finally).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[2]
LOCAL_SH = REPO / "cluster" / "local.sh"
CLIENT = """
import json
from cdiflow.errors import ClusterUnavailable
from cdiflow.pipelines.cluster import connect
try:
    info = connect(None, timeout_s=10)
except ClusterUnavailable as exc:
    print(f"ClusterUnavailable: {exc}")
    raise SystemExit(2)
print(json.dumps({"num_nodes": info.num_nodes, "cpus": info.resources.get("CPU")}))
"""


def base_env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    env.pop("RAY_API_SERVER_ADDRESS", None)
    bin_dir = str(Path(sys.executable).parent)
    env.update(
        CDIFLOW_LOCAL_RAY_STATE_DIR=str(state),
        CDIFLOW_LOCAL_RAY_NUM_CPUS="1",
        CDIFLOW_LOCAL_RAY_OBJECT_STORE_BYTES=str(100 * 1024 * 1024),
        PATH=bin_dir + os.pathsep + env.get("PATH", ""),
        RAY_BIN=str(Path(bin_dir) / "ray"),
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONPATH=str(REPO / "platform"),
    )
    return env


def local_sh(env: dict, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(LOCAL_SH), *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def client_env(state: Path) -> dict[str, str]:
    exports = {}
    for line in (state / "env.sh").read_text().splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        exports[key] = value
    return exports


def cluster_pids(state: Path) -> set[int]:
    """Every live process in the sessions that local.sh recorded for its nodes."""
    sids = {int(t) for f in (state / "nodes").glob("*.sid") if (t := f.read_text().strip())}
    pids = set()
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) in sids:
                pids.add(proc.pid)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return pids


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def run_client(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CLIENT],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=90,
    )


def test_help_exits_zero():
    result = subprocess.run(["bash", str(LOCAL_SH), "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "start [N]" in result.stdout and "RAY_AUTH_TOKEN_PATH" in result.stdout


@pytest.mark.parametrize("args", [("start", "two"), ("start", "1", "2"), ("restart",)])
def test_bad_arguments_exit_2(args, tmp_path):
    result = local_sh(base_env(tmp_path / "state"), *args, timeout=30)
    assert result.returncode == 2
    assert not (tmp_path / "state" / "nodes").exists(), "nothing may start"


def test_local_cluster_token_auth_and_clean_stop(tmp_path):
    state = tmp_path / "state"
    env = base_env(state)
    pids: set[int] = set()
    try:
        started = local_sh(env, "start", "1")
        assert started.returncode == 0, started.stdout + started.stderr
        exports = client_env(state)
        assert exports["RAY_ADDRESS"].startswith("127.0.0.1:")
        assert exports["RAY_AUTH_MODE"] == "token"
        token = Path(exports["RAY_AUTH_TOKEN_PATH"])
        assert token.stat().st_mode & 0o077 == 0, "token file readable by others"
        pids = cluster_pids(state)
        assert pids, "no process recorded for the cluster"

        with_token = run_client({**env, **exports})
        assert with_token.returncode == 0, with_token.stdout + with_token.stderr
        assert '"num_nodes": 2' in with_token.stdout

        # No token: auth explicitly off and a HOME without ~/.ray/auth_token.
        home = tmp_path / "home"
        home.mkdir()
        refused = run_client(
            {
                **env,
                "RAY_ADDRESS": exports["RAY_ADDRESS"],
                "RAY_AUTH_MODE": "disabled",
                "HOME": str(home),
            }
        )
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "refused this client" in refused.stdout

        again = local_sh(env, "start", "1")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "head already running" in again.stdout
        assert "worker-1 already running" in again.stdout
        assert local_sh(env, "status").returncode == 0
    finally:
        pids |= cluster_pids(state)  # includes workers started for the clients
        stopped = local_sh(env, "stop")
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    left = sorted(pid for pid in pids if alive(pid))
    assert not left, f"processes of the cluster still alive: {left}"
    assert local_sh(env, "status").returncode == 3
