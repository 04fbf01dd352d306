"""Ray Tune sweeps over the training config: ASHA + Optuna, each trial a Ray Train run.

The sweep (driver side, ``run_sweep``):

1. validates the space against the training config (``tune_space.check_space``) and the
   dataset, before any trial starts;
2. opens an MLflow parent run for the sweep (its id is kept in the sweep folder, so a
   restarted sweep logs into the same run);
3. runs a ``Tuner`` over a *function trainable* (``trial_main``) with an ASHA scheduler
   and a seeded ``OptunaSearch``; ``Tuner(trainer)`` is not used (deprecated, and it fails
   under Train V2). An interrupted sweep is continued with ``Tuner.restore`` whenever
   ``Tuner.can_restore`` finds its state;
4. writes ``summary.csv`` and ``trials.png`` into the sweep folder and the parent run;
5. registers the best trial's weights as a new version of ``cdiflow-cnn`` with alias
   ``candidate``; the registry's champion rule (``tracking.register_weights``) decides
   whether it also becomes ``champion``.

Each trial (``trial_main``, in its own Ray actor) opens a child run (tag
``mlflow.parentRunId``), then builds and fits a ``TorchTrainer`` over the registry's
per-worker function ``cdiflow.pipelines.train.train_worker``, with
``ray.train.RunConfig(name=<trial name>, callbacks=[TuneReportCallback()])`` so every
epoch's report reaches Tune (and ASHA). A resumed trial refits with the same run name
and storage path, which continues from its latest Train checkpoint.

Ray and MLflow are imported inside functions: importing this module starts nothing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

from cdiflow.errors import CdiflowError, InputError
from cdiflow.formats.atomic import atomic_write_json
from cdiflow.formats.location import Location
from cdiflow.pipelines.tune_space import METRIC, SweepConfig, check_space, trial_config

SWEEP_RECORD = "cdiflow-sweep.json"  # parent run id, registration outcome
TRIAL_RECORDS = "trial-records"  # one JSON per trial: child run id, checkpoint, metrics
TRAIN_RUNS = "train-runs"  # Ray Train run folders of the trials
SUMMARY_CSV = "summary.csv"
TRIALS_PNG = "trials.png"
CANDIDATE = "candidate"


class SweepInterrupted(CdiflowError):
    """The sweep stopped before all trials finished; re-running the command resumes it."""


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


# --- sizing -------------------------------------------------------------------------------


def trial_demand(sweep: SweepConfig, scaling) -> dict[str, float]:
    """Resources one trial holds at once: its own process, its Train workers, its reads."""
    cpu = sweep.trial_cpus + scaling.workers * scaling.cpus_per_worker + sweep.data_cpus
    return {"CPU": cpu, "GPU": float(scaling.workers) if scaling.use_gpu else 0.0}


def concurrency(sweep: SweepConfig, scaling, resources: dict[str, float]) -> int:
    """Trials that fit the cluster together, so no trial waits forever on another's CPUs.

    ``sweep.max_concurrent_trials`` wins when set; otherwise as many trials as the CPUs
    (and GPUs) hold, at least 1 and at most ``sweep.trials``. On a 2-CPU machine with one
    0.5-CPU worker per trial this is 1: 0.25 (trial) + 0.5 (worker) + 0.5 (reads) > 1.
    """
    if sweep.max_concurrent_trials:
        return min(sweep.max_concurrent_trials, sweep.trials)
    need = trial_demand(sweep, scaling)
    fits = math.floor(float(resources.get("CPU", 0)) / need["CPU"] + 1e-9)
    if need["GPU"]:
        fits = min(fits, math.floor(float(resources.get("GPU", 0)) / need["GPU"] + 1e-9))
    return max(1, min(fits, sweep.trials))


def check_fits(sweep: SweepConfig, scaling, resources: dict[str, float]) -> None:
    """``InputError`` when a single trial can never be scheduled (it would wait forever)."""
    if scaling.autoscaling:
        return
    need = trial_demand(sweep, scaling)
    cpus, gpus = float(resources.get("CPU", 0)), float(resources.get("GPU", 0))
    if need["CPU"] > cpus + 1e-9 or need["GPU"] > gpus + 1e-9:
        raise InputError(
            f"one trial needs {need['CPU']:g} CPU and {need['GPU']:g} GPU (trial_cpus + "
            f"workers x cpus_per_worker + data_cpus), the cluster has {cpus:g} CPU and "
            f"{gpus:g} GPU"
        )


# --- one trial (runs in a Ray actor) -----------------------------------------------------


def trial_main(params: dict, context: dict) -> None:
    """Tune function trainable: one training run with ``params`` applied to the base config.

    ``context`` (from ``tune.with_parameters``) holds the base training config, the
    fixed values and epochs, the data paths, where Train keeps its runs, and the MLflow
    URI plus parent run.
    """
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

    from cdiflow.pipelines.cluster import train_env_defaults
    from cdiflow.pipelines.train import TrainJobConfig, build_trainer

    tune_context = ray.tune.get_context()
    trial, trial_id = tune_context.get_trial_name(), tune_context.get_trial_id()
    values = {**context["fixed"], **params}
    job = TrainJobConfig.from_dict(trial_config(context["base"], context["epochs"], values))
    records = Path(context["sweep_dir"]) / TRIAL_RECORDS
    records.mkdir(parents=True, exist_ok=True)
    uri, run_id = context.get("tracking_uri"), None
    if uri:
        run_id = _child_run(context, trial, job, params)
    record = records / f"{trial_id}.json"
    _write_json(record, {"trial": trial, "run_id": run_id, "params": params})

    trainer = build_trainer(
        job,
        context["shards"],
        train_rows=context["train_rows"],
        tracking_uri=uri,
        run_id=run_id,
        name=trial,
        storage_path=context["train_storage"],
        callbacks=[TuneReportCallback()],
    )
    train_env_defaults()  # in the trial's actor: Tune does not pass the driver's environment on
    result = trainer.fit()
    if result.error is not None:
        if run_id:
            _set_status(uri, run_id, "FAILED")
        raise result.error
    checkpoint = result.checkpoint.path if result.checkpoint is not None else None
    metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
    _write_json(
        record,
        {"trial": trial, "run_id": run_id, "params": params, "checkpoint": checkpoint,
         "metrics": metrics, "finished": True},
    )  # fmt: skip
    if run_id:
        _set_status(uri, run_id, "FINISHED")


def _child_run(context: dict, trial: str, job, params: dict) -> str:
    """The trial's MLflow run under the sweep's parent run (reused when a trial resumes)."""
    from mlflow import MlflowClient

    from cdiflow.pipelines.tracking import RunLogger

    uri, parent = context["tracking_uri"], context["parent_run_id"]
    client = MlflowClient(uri, registry_uri=uri)
    found = client.search_runs(
        [context["experiment_id"]],
        filter_string=f"tags.`cdiflow.trial` = '{trial}' and tags.`mlflow.parentRunId` = "
        f"'{parent}'",
        max_results=1,
    )
    if found:
        client.update_run(found[0].info.run_id, status="RUNNING")
        return found[0].info.run_id
    tags = {
        "mlflow.parentRunId": parent,
        "cdiflow.sweep": context["name"],
        "cdiflow.trial": trial,
        **{f"tuned.{k}": str(v) for k, v in params.items()},
    }
    logger = RunLogger.start(
        uri, context["experiment_id"], trial, job.to_dict(), {"train": job.train.seed}, tags
    )
    return logger.run_id


def _set_status(uri: str, run_id: str, status: str) -> None:
    from mlflow import MlflowClient

    MlflowClient(uri, registry_uri=uri).set_terminated(run_id, status=status)


def _write_json(path: Path, data: dict) -> None:
    atomic_write_json(path, data, indent=1, default=str)


# --- the sweep (driver) ------------------------------------------------------------------


def default_name() -> str:
    return time.strftime("tune-%Y%m%d-%H%M%S", time.gmtime())


def run_sweep(
    sweep: SweepConfig,
    base,
    data_dir: str | Path,
    workspace: str | Path,
    name: str | None = None,
    storage_path: str | Path | None = None,
    track: bool = True,
    train_rows: int | None = None,
) -> SweepOutcome:
    """Run (or continue) a sweep. Ray must already be initialised or connected.

    Parameters
    ----------
    sweep : the validated sweep.
    base : ``TrainJobConfig`` the trials start from (scaling and run settings included).
    data_dir : dataset root with ``train/`` and ``val/`` shards.
    workspace : folder of the embedded MLflow store and, by default, the sweeps.
    name : sweep name; the sweep folder is ``STORAGE/name``. An existing sweep of that
        name is continued (``Tuner.restore``).
    storage_path : where sweeps live (default ``WORKSPACE/sweeps``; shared storage on a
        multi-node cluster).
    track : MLflow parent/child runs and registration; False runs the trials only.
    train_rows : rows of the training split when the caller has validated the dataset
        already (the deep check reads every shard); None checks it here.

    Raises
    ------
    ConfigError, DatasetError, InputError
        Invalid space, dataset or resources, before any trial starts.
    SweepInterrupted
        The sweep was stopped (SIGINT / SIGUSR1) before every trial finished.
    """
    import ray
    from ray import tune

    from cdiflow.pipelines.data import list_shards, validate_split
    from cdiflow.pipelines.train import TrainJobConfig

    base_dict = base.to_dict()
    check_space(sweep, base_dict, TrainJobConfig.from_dict)
    data_dir = Location.parse(data_dir).expanduser().resolve().value  # a URI stays one
    if train_rows is None:
        train_rows = validate_split(data_dir, "train")
        validate_split(data_dir, "val")
    resources = ray.cluster_resources()
    check_fits(sweep, base.scaling, resources)

    workspace = Path(workspace).expanduser().resolve()
    storage = Path(storage_path).expanduser().resolve() if storage_path else workspace / "sweeps"
    name = name or default_name()
    sweep_dir = storage / name
    resumed = tune.Tuner.can_restore(str(sweep_dir))
    if sweep_dir.exists() and not resumed:
        raise InputError(f"{sweep_dir} exists but holds no sweep to resume; pick a new --name")
    sweep_dir.mkdir(parents=True, exist_ok=True)

    record = _read_record(sweep_dir)
    uri = parent = exp_id = None
    if track:
        uri, parent, exp_id = _parent_run(sweep, base_dict, workspace, name, sweep_dir, record)
    context = {
        "name": name,
        "base": base_dict,
        "fixed": sweep.fixed(),
        "epochs": sweep.epochs,
        "train_rows": train_rows,
        "shards": {s: [str(p) for p in list_shards(data_dir, s)] for s in ("train", "val")},
        "sweep_dir": str(sweep_dir),
        "train_storage": str(sweep_dir / TRAIN_RUNS),
        "tracking_uri": uri,
        "parent_run_id": parent,
        "experiment_id": exp_id,
    }
    trainable = tune.with_resources(
        tune.with_parameters(trial_main, context=context), {"CPU": sweep.trial_cpus}
    )
    if resumed:
        tuner = tune.Tuner.restore(
            str(sweep_dir), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = _new_tuner(sweep, base.scaling, resources, trainable, storage, name)
    grid = tuner.fit()

    rows, interrupted = _rows(grid, sweep, sweep_dir)
    if interrupted:
        ended = sum(1 for r in rows if r["status"] != "UNFINISHED")
        raise SweepInterrupted(
            f"sweep {name} stopped after {ended} of {sweep.trials} trials; re-run the same "
            "command to continue it"
        )
    return _finish(sweep, rows, sweep_dir, name, uri, parent, record, resumed, data_dir)


def _new_tuner(sweep, scaling, resources, trainable, storage: Path, name: str):
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    space = {key: dist.to_tune() for key, dist in sweep.tuned().items()}
    scheduler = ASHAScheduler(
        time_attr="training_iteration",  # one report per epoch
        max_t=sweep.epochs,
        grace_period=sweep.asha_grace_period,
        reduction_factor=sweep.reduction_factor,
    )
    return tune.Tuner(
        trainable,
        param_space=space,
        tune_config=tune.TuneConfig(
            metric=METRIC,
            mode="min",
            search_alg=OptunaSearch(seed=sweep.seed),
            scheduler=scheduler,
            num_samples=sweep.trials,
            max_concurrent_trials=concurrency(sweep, scaling, resources),
        ),
        run_config=tune.RunConfig(
            name=name,
            storage_path=str(storage),
            failure_config=tune.FailureConfig(max_failures=0),
            verbose=1,
        ),
    )


def _read_record(sweep_dir: Path) -> dict:
    path = sweep_dir / SWEEP_RECORD
    return json.loads(path.read_text()) if path.is_file() else {}


def _parent_run(sweep, base_dict, workspace, name, sweep_dir, record):
    """The sweep's parent run: reopened from the sweep record, or created."""
    from cdiflow.pipelines.tracking import RunLogger, configure, experiment_id

    uri = configure(workspace)
    exp_id = experiment_id(uri, sweep.experiment, workspace=workspace)
    if record.get("parent_run_id") and record.get("tracking_uri") == uri:
        parent = record["parent_run_id"]
        if not record.get("registered"):
            RunLogger(uri, parent).client.update_run(parent, status="RUNNING")
        return uri, parent, exp_id
    config = {"sweep": sweep.to_dict(), "base": base_dict}
    seeds = {"optuna": sweep.seed, "train": base_dict["train"]["seed"]}
    logger = RunLogger.start(uri, exp_id, name, config, seeds, tags={"cdiflow.sweep": name})
    record.update({"parent_run_id": logger.run_id, "tracking_uri": uri, "experiment_id": exp_id})
    _write_json(sweep_dir / SWEEP_RECORD, record)
    return uri, logger.run_id, exp_id


def _rows(grid, sweep: SweepConfig, sweep_dir: Path) -> tuple[list[dict], bool]:
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


def _finish(sweep, rows, sweep_dir, name, uri, parent, record, resumed, data_dir) -> SweepOutcome:
    from cdiflow.reports.sweep import plot_trials, write_summary

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
        _write_json(sweep_dir / SWEEP_RECORD, record)
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

    from cdiflow.pipelines.tracking import MODEL_NAME, WEIGHTS_FILE, register_weights
    from cdiflow.pipelines.train import champion_rescorer, eval_fingerprint

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
