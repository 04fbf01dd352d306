"""MLflow tracking and the model registry for cdiflow.

Tracking store: ``MLFLOW_TRACKING_URI`` when set (a real ``mlflow server``), otherwise an
embedded SQLite store inside the workspace folder (``sqlite:///<workspace>/mlflow.db``,
artifacts in ``<workspace>/mlartifacts``). Nothing happens at import: mlflow is imported
inside the functions and folders are created only when a function that needs them runs.

Registry: the model ``cdiflow-cnn``. A version's artifact is the weights file written by
``cdiflow.models.save_weights`` (tensors plus the typed architecture config), never a
pickled module, so loading a version never runs code from the store. Its metrics are
kept as version tags. The alias ``champion`` moves to a new version only when that
version's validation chi^2 is lower than the current champion's, measured on the same
evaluation set (the version tag ``eval_fingerprint``; the caller rescores the champion
when the sets differ); the comparison is recorded as tags on the new version either way.
A non-finite score is refused; a champion without a finite score counts as infinitely bad.

The code lives in three modules: ``tracking_store`` (the store, ``git_sha``, the per-run
``RunLogger`` and the names the registry shares), ``champion`` (the champion rule) and
``registry`` (registering, naming and loading models). This module is the one name
callers import them by.
"""

from __future__ import annotations

from cdiflow.pipelines.champion import Promotion, apply_champion_rule
from cdiflow.pipelines.registry import (
    PRETRAINED_TAG,
    WEIGHTS_ARTIFACT_DIR,
    ensure_pretrained,
    load_model,
    model_reference,
    parse_model_ref,
    register_weights,
    resolve_version,
)
from cdiflow.pipelines.tracking_store import (
    CHAMPION,
    DEFAULT_MODEL,
    EXPERIMENT,
    FINGERPRINT_TAG,
    MODEL_NAME,
    SCORE_METRIC,
    WEIGHTS_FILE,
    RunLogger,
    configure,
    experiment_id,
    flatten,
    git_sha,
    is_embedded,
    tracking_uri,
)

__all__ = [
    "CHAMPION",
    "DEFAULT_MODEL",
    "EXPERIMENT",
    "FINGERPRINT_TAG",
    "MODEL_NAME",
    "PRETRAINED_TAG",
    "SCORE_METRIC",
    "WEIGHTS_ARTIFACT_DIR",
    "WEIGHTS_FILE",
    "Promotion",
    "RunLogger",
    "apply_champion_rule",
    "configure",
    "ensure_pretrained",
    "experiment_id",
    "flatten",
    "git_sha",
    "is_embedded",
    "load_model",
    "model_reference",
    "parse_model_ref",
    "register_weights",
    "resolve_version",
    "tracking_uri",
]
