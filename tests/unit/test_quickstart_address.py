"""``cdiflow quickstart`` starts its own local Ray, also in a shell where RAY_ADDRESS is set.

Regression: it called ``ray.init(num_cpus=2)`` without ``address="local"``, so in a shell
prepared for a cluster (``eval "$(cluster/local.sh env)"``) it joined that cluster.
Only ``cdiflow quickstart --address`` sends it to a cluster.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cdiflow.errors import ClusterUnavailable
from cdiflow.pipelines.quickstart import LOCAL_CPUS, ray_init_kwargs, run_quickstart

REPO = Path(__file__).resolve().parents[2]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_no_address_is_a_local_ray_even_when_ray_address_is_set(monkeypatch):
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{closed_port()}")
    kwargs = ray_init_kwargs(None)
    assert kwargs["address"] == "local"
    assert kwargs["num_cpus"] == LOCAL_CPUS and kwargs["include_dashboard"] is False
    assert kwargs["object_store_memory"] <= 200 * 1024**2
    assert ray_init_kwargs("local") == kwargs


@pytest.mark.parametrize("address", ["auto", "10.0.0.5:6379", "ray://head:10001"])
def test_a_given_address_is_the_cluster_to_join(monkeypatch, address):
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")
    assert ray_init_kwargs(address) == {"address": address}


def test_a_given_address_that_does_not_answer_fails_fast_with_one_line(tmp_path):
    import ray

    port = closed_port()
    start = time.monotonic()
    with pytest.raises(ClusterUnavailable) as info:
        run_quickstart(tmp_path / "ws", address=f"127.0.0.1:{port}", say=lambda line: None)
    assert time.monotonic() - start < 30
    assert f"127.0.0.1:{port}" in str(info.value) and "\n" not in str(info.value)
    assert not ray.is_initialized()


CLIENT = """
import json, os, ray
from cdiflow.pipelines.quickstart import ray_init_kwargs
kwargs = ray_init_kwargs(None)
kwargs.update(num_cpus=1, object_store_memory=100 * 1024**2)  # smaller than the quickstart's
ray.init(**kwargs)
try:
    answer = ray.get(ray.remote(lambda: 42).remote())
    gcs = ray.get_runtime_context().gcs_address
    cpus = ray.cluster_resources().get("CPU")
finally:
    ray.shutdown()
print(json.dumps({"answer": answer, "gcs": gcs, "cpus": cpus}))
"""


def test_local_ray_starts_while_ray_address_names_a_dead_cluster(tmp_path):
    dead = f"127.0.0.1:{closed_port()}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_ADDRESS", "RAY_AUTH"))}
    # RAY_ADDRESS as a prepared shell has it; no token and nothing written to ~/.ray.
    env.update(
        RAY_ADDRESS=dead,
        RAY_AUTH_MODE="disabled",
        RAY_USAGE_STATS_ENABLED="0",
        HOME=str(tmp_path),
        PYTHONPATH=str(REPO / "platform"),
    )
    result = subprocess.run(
        [sys.executable, "-c", CLIENT],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]
    info = json.loads(result.stdout.strip().splitlines()[-1])
    assert info["answer"] == 42 and info["cpus"] == 1.0
    assert info["gcs"] != dead


def test_quickstart_help_shows_address_and_its_own_default(capsys):
    from cdiflow.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["quickstart", "--help"])
    assert exc.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps the help
    assert "--address ADDRESS" in text
    assert "(default: a new local Ray for this run; RAY_ADDRESS is ignored)" in text


@pytest.mark.parametrize(
    "flags, address",
    [
        ([], None),
        (["--address", "auto"], "auto"),
        (["--address", "10.0.0.5:6379"], "10.0.0.5:6379"),
    ],
)
def test_the_parsed_address_reaches_run_quickstart(monkeypatch, tmp_path, flags, address):
    import cdiflow.pipelines.quickstart as pipeline
    from cdiflow.cli import main

    seen = {}

    def fake_run(workspace, beamtimes=(), config=None, say=print, address=None):
        seen.update(workspace=Path(workspace), address=address)
        return pipeline.QuickstartOutcome(Path(workspace), Path("r.html"), "1", False, {}, {})

    monkeypatch.setattr(pipeline, "run_quickstart", fake_run)
    workspace = tmp_path / "ws"
    # --verbose: leave this process's logging alone (quiet_ray has its own tests)
    assert main(["quickstart", "--workspace", str(workspace), "--verbose", *flags]) == 0
    assert seen == {"workspace": workspace, "address": address}
