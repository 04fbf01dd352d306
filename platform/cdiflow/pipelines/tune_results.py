"""The end of a sweep: one summary row per trial, the summary files, the best trial
registered (alias ``candidate``; the champion rule decides ``champion``).

MLflow and matplotlib are imported inside functions.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from cdiflow.errors import CdiflowError
from cdiflow.pipelines.registry import register_weights
from cdiflow.pipelines.tracking_store import MODEL_NAME, WEIGHTS_FILE
from cdiflow.pipelines.train_result import champion_rescorer, eval_fingerprint
from cdiflow.pipelines.tune_space import METRIC, SweepConfig
from cdiflow.pipelines.tune_trial import TRIAL_RECORDS, write_record
from cdiflow.reports.sweep import plot_trials, write_summary

SWEEP_RECORD = "cdiflow-sweep.json"  # parent run id, registration outcome
SUMMARY_CSV = "summary.csv"
TRIALS_PNG = "trials.png"
CANDIDATE = "candidate"


def read_record(sweep_dir: Path) -> dict:
    """The sweep record (``SWEEP_RECORD``), or {} before the sweep wrote one."""
    path = sweep_dir / SWEEP_RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


@dataclasses.dataclass(frozen=True)
class SweepOutcome:
    """What a sweep produced."""

    name: str
    sweep_dir: str
    parent_run_id: str | None
    tracking_uri: str | None
    trials: list[dict]  # one row per trial, as in summary.csv
    best_trial: str | None
    registered: dict | None  # Promotion.to_dict() plus the candidate alias
    resumed: bool

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def trial_rows(grid, sweep: SweepConfig, sweep_dir: Path) -> tuple[list[dict], bool]:
    """One summary row per trial (name, status, epochs, val_chi2, params, run, checkpoint),
    and whether the sweep was interrupted before every trial ended."""
    keys = list(sweep.tuned())
    ended = grid.num_terminated + grid.num_errors
    interrupted = len(grid) < sweep.trials or ended < len(grid)
    rows = []
    for result in grid:
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id", "")
        info_path = sweep_dir / TRIAL_RECORDS / f"{trial_id}.json"
        info = json.loads(info_path.read_text()) if trial_id and info_path.is_file() else {}
        # the registry's 0-based epoch index: right also for a trial resumed mid-way,
        # whose training_iteration restarts from its first report after the restart
        epochs = int(metrics.get("epoch", -1)) + 1
        if result.error is not None:
            status = "ERROR"
        elif info.get("finished") or epochs >= sweep.epochs:
            status = "COMPLETED"  # ASHA stops a trial at max_t, often before fit() returns
        elif epochs and not interrupted:
            status = "STOPPED_EARLY"  # by ASHA
        else:
            status = "UNFINISHED"
        config = result.config or {}
        rows.append(
            {
                "trial": info.get("trial", Path(result.path).name),
                "status": status,
                "epochs": epochs,
                METRIC: float(metrics.get(METRIC, math.nan)),
                **{k: config.get(k) for k in keys},
                "run_id": info.get("run_id"),
                "checkpoint": metrics.get("checkpoint_path"),
            }
        )
    rows.sort(key=lambda r: r["trial"])
    return rows, interrupted


def finish_sweep(
    sweep, rows, sweep_dir, name, uri, parent, record, resumed, data_dir
) -> SweepOutcome:
    keys = list(sweep.tuned())
    summary = write_summary(rows, sweep_dir / SUMMARY_CSV)
    figure = plot_trials(rows, keys, METRIC, sweep_dir / TRIALS_PNG)
    scored = [r for r in rows if r["checkpoint"] and math.isfinite(r[METRIC])]
    if not scored:
        raise CdiflowError(f"sweep {name}: no trial reported {METRIC}; see {sweep_dir}")
    best = min(scored, key=lambda r: r[METRIC])
    registered = record.get("registered")
    if uri:
        registered = _log_outcome(sweep, rows, best, summary, figure, uri, parent, record, data_dir)
        record["registered"] = registered
        write_record(sweep_dir / SWEEP_RECORD, record)
    return SweepOutcome(
        name=name,
        sweep_dir=str(sweep_dir),
        parent_run_id=parent,
        tracking_uri=uri,
        trials=rows,
        best_trial=best["trial"],
        registered=registered,
        resumed=resumed,
    )


def _log_outcome(sweep, rows, best, summary, figure, uri, parent, record, data_dir) -> dict | None:
    """Artifacts and best-trial tags on the parent run; register the best trial once."""
    from mlflow import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    ends = {"COMPLETED": "FINISHED", "STOPPED_EARLY": "KILLED", "ERROR": "FAILED"}
    for row in rows:  # a trial that Tune stopped (ASHA, max_t) leaves its run RUNNING
        if row["run_id"] and client.get_run(row["run_id"]).info.status == "RUNNING":
            client.set_terminated(row["run_id"], status=ends.get(row["status"], "KILLED"))
            client.set_tag(row["run_id"], "cdiflow.trial_status", row["status"])
    client.log_artifact(parent, str(summary))
    client.log_artifact(parent, str(figure))
    client.set_tag(parent, "best_trial", best["trial"])
    client.log_metric(parent, f"best_{METRIC}", best[METRIC])
    registered = record.get("registered")
    if sweep.register and not registered and best["run_id"]:
        metrics = {METRIC: best[METRIC], "epochs": float(best["epochs"])}
        weights = Path(best["checkpoint"]) / WEIGHTS_FILE
        decision = register_weights(
            uri,
            best["run_id"],
            weights,
            metrics,
            fingerprint=eval_fingerprint(data_dir),
            rescore=champion_rescorer(uri, data_dir),
        )
        client.set_registered_model_alias(MODEL_NAME, CANDIDATE, decision.version)
        registered = {**decision.to_dict(), "alias": CANDIDATE, "trial": best["trial"]}
        client.set_tag(parent, "registered_version", decision.version)
        client.log_dict(parent, registered, "registered.json")
    client.set_terminated(parent, status="FINISHED")
    return registered
