"""Which model the beamtime job runs: pinned before any scan is read, checked before any
file is written (``cdiflow.pipelines.reconstruct``).

Pinning (``pin_model``) needs no weights: it names the model version a finished result
must match to be kept. Resolving (``resolve_model``) loads the model once on the driver,
so an unknown or broken model fails the job before any scan runs.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from cdiflow import pretrained
from cdiflow.errors import ModelNotFound
from cdiflow.formats.dataset import file_sha256
from cdiflow.pipelines.tracking import (
    DEFAULT_MODEL,
    configure,
    load_model,
    model_reference,
    resolve_version,
)


def pin_model(ref: str | None, workspace: str | Path) -> tuple[str, str | None, str]:
    """Pin the model without loading it: (reference to load, tracking URI, model version).

    The model version is what a finished result must have been made with to be kept:
    ``sha256:<hex>`` of a weights file, or ``models:/NAME/VERSION`` for a registry
    reference, whose alias is resolved here to its current version (the reference
    returned), so every actor of the job loads the same weights even if the alias moves
    while the job runs. A weights file that does not exist gets version "" (it matches
    no result; loading it then raises ``ModelNotFound``).

    Raises
    ------
    ModelNotFound : an unknown registry model, or a workspace without a store.
    """
    text = model_reference(ref)
    if not text.startswith("models:/"):  # a weights file needs no store
        path = Path(text)
        return text, None, f"sha256:{file_sha256(path)}" if path.is_file() else ""
    _check_store(workspace, text)
    uri = configure(workspace)
    version = resolve_version(uri, text)
    pinned = f"models:/{version.name}/{version.version}"
    return pinned, uri, pinned


def resolve_model(ref: str | None, uri: str | None) -> tuple[str, dict[str, Any]]:
    """Check the model exists and pin it: (reference the actors load, provenance).

    A registry alias is pinned to its current version, so every actor of the job loads
    the same weights even if the alias moves while the job runs.
    """
    text = model_reference(ref)
    _, config, provenance = load_model(text, uri)
    pinned = text
    if text.startswith("models:/") and provenance.get("version"):
        pinned = f"models:/{provenance['name']}/{provenance['version']}"
    info = {k: v for k, v in provenance.items() if k != "tags"}
    info["metrics"] = dict(provenance.get("tags", {}))
    info["pinned_ref"] = pinned
    info["config"] = config.to_dict()
    return pinned, info


def _check_store(workspace: str | Path, ref: str) -> None:
    """Refuse a registry model when the workspace has no embedded store yet.

    Looking it up would create the workspace and an empty store (with MLflow's log lines
    on stderr) only to find no model; ``ModelNotFound`` says what to pass instead.
    """
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return  # a server (or a store named there) is looked up as it is
    if ref == DEFAULT_MODEL and pretrained.available():
        return  # a new workspace registers the shipped model as its champion
    root = Path(workspace).expanduser().resolve()
    if not (root / "mlflow.db").is_file():  # the store of tracking.tracking_uri
        raise ModelNotFound(
            f"{ref} not found: --workspace {root} has no MLflow store (mlflow.db); "
            "pass the workspace that registered it, set MLFLOW_TRACKING_URI, or give "
            "--model a weights file"
        )
