"""What a beamtime run will do, settled before anything is written
(``cdiflow.pipelines.reconstruct``): the selected scans, which finished ones are kept
(resume), and the model that runs the rest.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from cdiflow.beamtime.results import (
    SCANS_DIR,
    read_completed_summary,
    result_path,
    stale_reason,
)
from cdiflow.beamtime.steps import plan_scans
from cdiflow.pipelines.reconstruct_model import pin_model, resolve_model
from cdiflow.pipelines.tracking import model_reference


@dataclasses.dataclass
class RunPlan:
    """What a run will do, settled before anything is written."""

    items: list[dict]  # every selected scan
    done: dict[str, dict]  # key -> summary row kept from an earlier run
    redone: dict[str, str]  # key -> why a scan finished earlier is redone
    todo: list[dict]  # the scans to run
    pinned: str  # the model reference the actors load ("" when no scan is selected)
    uri: str | None  # the tracking URI it is loaded from (None: a weights file)
    model_version: str
    model_info: dict[str, Any]  # empty when there is nothing to run


def plan_run(sources, selection, model, workspace, out: Path, config, force: bool) -> RunPlan:
    """Plan the scans, keep the finished ones, and check the model if any scan is left."""
    items = plan_scans([str(s) for s in sources], selection)
    # the model is pinned (not loaded) first: a finished scan is kept only if it matches
    pinned, uri, model_version = pin_model(model, workspace) if items else ("", None, "")
    done, redone = finished_rows(items, out, model_version, config.config_hash, force)
    todo = [i for i in items if i["key"] not in done]
    model_info: dict[str, Any] = {}
    if todo:  # the model (then the cluster) is checked before anything is written
        pinned, model_info = resolve_model(pinned, uri)
        model_info.update(ref=model_reference(model), model_version=model_version)
    return RunPlan(items, done, redone, todo, pinned, uri, model_version, model_info)


def finished_rows(
    items: list[dict], out: Path, model_version: str, config_hash: str, force: bool
) -> tuple[dict[str, dict], dict[str, str]]:
    """Scans finished earlier: (key -> summary row kept, key -> why the scan is redone).

    A complete result is kept (skipped on this run) only when the model version, config
    hash and input fingerprint it recorded are this run's (``stale_reason``) and its
    ``.cxi`` copy exists (a result from before cdiflow wrote CXI files is redone); with
    ``force`` none is kept.
    """
    done, redo = {}, {}
    for item in items:
        row = read_completed_summary(result_path(out, SCANS_DIR, item["key"], ".h5"))
        if row is None:
            continue
        expected = {
            "model_version": model_version,
            "config_hash": config_hash,
            "input_fingerprint": item["input_fingerprint"],
        }
        why = "--force" if force else stale_reason(row, expected)
        if not why and not result_path(out, SCANS_DIR, item["key"], ".cxi").is_file():
            why = "no CXI result"
        if why:
            redo[item["key"]] = why
        else:
            done[item["key"]] = dict(row, skipped=True)
    return done, redo
