"""The MLflow tracking store and per-run logging (``RunLogger``).

Tracking store: ``MLFLOW_TRACKING_URI`` when set (a real ``mlflow server``), otherwise an
embedded SQLite store inside the workspace folder (``sqlite:///<workspace>/mlflow.db``,
artifacts in ``<workspace>/mlartifacts``). Nothing happens at import: mlflow is imported
inside the functions and folders are created only when a function that needs them runs.
The registry's shared names (model, alias, score and its tag, weights file) are declared
here once, for ``cdiflow.pipelines.champion`` and ``cdiflow.pipelines.registry``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

MODEL_NAME = "cdiflow-cnn"
CHAMPION = "champion"
DEFAULT_MODEL = f"models:/{MODEL_NAME}@{CHAMPION}"  # what "no model named" means
EXPERIMENT = "cdiflow"
WEIGHTS_FILE = "model.pt"  # name of the weights file inside that folder
SCORE_METRIC = "val_chi2"  # lower is better; decides the champion
FINGERPRINT_TAG = "eval_fingerprint"  # version tag: the set SCORE_METRIC was measured on


# --- tracking store --------------------------------------------------------------------


def tracking_uri(workspace: str | Path) -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` if set, else the workspace's SQLite store.

    The workspace folder is created when the embedded store is used.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = Path(workspace).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def is_embedded(uri: str) -> bool:
    """True for a local SQLite store (artifacts then live in the workspace)."""
    return uri.startswith("sqlite:")


def configure(workspace: str | Path) -> str:
    """Point mlflow at this workspace's store (or at ``MLFLOW_TRACKING_URI``); return the URI."""
    import mlflow

    uri = tracking_uri(workspace)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def experiment_id(uri: str, name: str = EXPERIMENT, workspace: str | Path | None = None) -> str:
    """Get or create the experiment; an embedded store keeps its artifacts in the workspace."""
    from mlflow import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if is_embedded(uri) and workspace is not None:
        folder = Path(workspace).expanduser().resolve() / "mlartifacts"
        location = folder.as_uri()
    return client.create_experiment(name, artifact_location=location)


def git_sha(start: str | Path | None = None) -> str | None:
    """The commit of the checkout that holds cdiflow (or ``start``), if it is a git tree."""
    where = Path(start) if start else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha or None


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> {"a.b": "value"} of strings, for MLflow params."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


# --- per-run logging (rank 0 only) ------------------------------------------------------


class RunLogger:
    """Logs one training run: config, git SHA and seeds once; metrics and figures per epoch.

    Built from a tracking URI and a run id, so the driver can create the run and the rank-0
    worker can log into it from another process. Only rank 0 may construct one.
    """

    def __init__(self, uri: str, run_id: str):
        from mlflow import MlflowClient

        self.uri = uri
        self.run_id = run_id
        self.client = MlflowClient(uri, registry_uri=uri)

    @classmethod
    def start(
        cls,
        uri: str,
        experiment: str,
        run_name: str,
        config: Mapping[str, Any],
        seeds: Mapping[str, int],
        tags: Mapping[str, str] | None = None,
    ) -> RunLogger:
        """Create a run and log the whole config (flattened params + config.json)."""
        from mlflow import MlflowClient

        client = MlflowClient(uri, registry_uri=uri)
        all_tags = {"mlflow.runName": run_name, **(tags or {})}
        sha = git_sha()
        if sha:
            all_tags["git_sha"] = sha
        run = client.create_run(experiment, run_name=run_name, tags=all_tags)
        logger = cls(uri, run.info.run_id)
        logger.log_config(config, seeds)
        return logger

    def log_config(self, config: Mapping[str, Any], seeds: Mapping[str, int]) -> None:
        from mlflow.entities import Param

        params = flatten(config)
        params.update({f"seed.{k}": str(v) for k, v in seeds.items()})
        items = [Param(k, v[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(self.run_id, params=items[start : start + 100])
        self.client.log_dict(
            self.run_id, {"config": dict(config), "seeds": dict(seeds)}, "config.json"
        )

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Log every finite number in ``metrics`` with step = epoch."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, int(epoch))
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and math.isfinite(float(v))
        ]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_figure(self, figure, name: str) -> None:
        """Log a matplotlib figure as an artifact (``figures/<name>``)."""
        self.client.log_figure(self.run_id, figure, f"figures/{name}")

    def log_file(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        self.client.log_dict(self.run_id, dict(data), name)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)
