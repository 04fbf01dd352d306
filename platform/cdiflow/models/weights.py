"""Weight files that never unpickle code: plain tensors + the architecture config as JSON.

One file (``.pt``) holds ``{"format", "format_version", "config" (JSON text),
"metadata" (str -> str/float/int), "state_dict" (name -> tensor)}``, written with
``torch.save`` and read with ``torch.load(weights_only=True)``, whose unpickler only
accepts tensors and plain containers: a file carrying any other object (a class, a
function, an ``os.system`` call) is refused before anything runs. This is the format the
model registry stores.
"""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cdiflow.errors import InputError, ModelNotFound
from cdiflow.formats.atomic import atomic_path
from cdiflow.models.cnn import PhaseRetrievalCNN, build_model
from cdiflow.models.config import ModelConfig

FORMAT = "cdiflow-cnn"
FORMAT_VERSION = 1


class WeightsError(InputError):
    """A weight file is unreadable, unsafe (pickled code), or not a cdiflow CNN."""


def save_weights(
    path: str | os.PathLike,
    model: nn.Module,
    config: ModelConfig,
    metadata: dict[str, str | float | int] | None = None,
) -> Path:
    """Write ``model``'s weights (CPU tensors) and ``config`` to ``path``, atomically.

    ``model`` may be wrapped (DDP); its ``module`` is saved. ``metadata`` holds plain
    values only (e.g. validation chi^2, git SHA).
    """
    model = getattr(model, "module", model)
    for key, value in (metadata or {}).items():
        if not isinstance(key, str) or not isinstance(value, (str, float, int)):
            raise WeightsError(f"metadata must map str to str/float/int, got {key!r}: {value!r}")
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "config": json.dumps(config.to_dict(), sort_keys=True),
        "metadata": dict(metadata or {}),
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def read_weights(path: str | os.PathLike) -> dict[str, Any]:
    """The raw payload of a weight file, loaded with ``weights_only=True`` and checked."""
    path = Path(path)
    if not path.is_file():
        raise ModelNotFound(f"weight file not found: {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise WeightsError(f"{path}: not a safe cdiflow weight file ({first})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise WeightsError(f"{path}: not a {FORMAT} weight file")
    if payload.get("format_version") != FORMAT_VERSION:
        raise WeightsError(
            f"{path}: format version {payload.get('format_version')} is not supported "
            f"(expected {FORMAT_VERSION})"
        )
    return payload


def load_weights(path: str | os.PathLike) -> tuple[PhaseRetrievalCNN, ModelConfig, dict]:
    """Rebuild the model from a weight file: (model in eval mode, config, metadata)."""
    payload = read_weights(path)
    config = ModelConfig.from_dict(json.loads(payload["config"]), where=str(path))
    model = build_model(config)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"{path}: weights do not match the config ({exc})") from None
    return model.eval(), config, dict(payload.get("metadata", {}))
