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

Each trial (``trial_main``, in ``tune_trial.py``, in its own Ray actor) opens a child
run and fits one ``TorchTrainer``; steps 4 and 5 are ``tune_results.py``.

Ray and MLflow are imported inside functions: importing this module starts nothing.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

from cdiflow.errors import CdiflowError, InputError
from cdiflow.formats.location import Location
from cdiflow.pipelines.data import list_shards, validate_split
from cdiflow.pipelines.tracking_store import RunLogger, configure, experiment_id
from cdiflow.pipelines.train_config import TrainJobConfig
from cdiflow.pipelines.tune_results import (
    CANDIDATE,
    SUMMARY_CSV,
    SWEEP_RECORD,
    TRIALS_PNG,
    SweepOutcome,
    finish_sweep,
    read_record,
    trial_rows,
)
from cdiflow.pipelines.tune_space import METRIC, SweepConfig, check_space
from cdiflow.pipelines.tune_trial import TRAIN_RUNS, TRIAL_RECORDS, trial_main, write_record

__all__ = [
    "CANDIDATE",
    "SUMMARY_CSV",
    "SWEEP_RECORD",
    "TRAIN_RUNS",
    "TRIALS_PNG",
    "TRIAL_RECORDS",
    "SweepInterrupted",
    "SweepOutcome",
    "check_fits",
    "concurrency",
    "default_name",
    "run_sweep",
    "trial_demand",
    "trial_main",
]


class SweepInterrupted(CdiflowError):
    """The sweep stopped before all trials finished; re-running the command resumes it."""


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
    base_dict, data_dir, train_rows, resources = _check_inputs(sweep, base, data_dir, train_rows)
    workspace = Path(workspace).expanduser().resolve()
    storage = Path(storage_path).expanduser().resolve() if storage_path else workspace / "sweeps"
    name = name or default_name()
    sweep_dir, resumed = storage / name, _sweep_folder(storage / name)
    record = read_record(sweep_dir)
    uri = parent = exp_id = None
    if track:
        uri, parent, exp_id = _parent_run(sweep, base_dict, workspace, name, sweep_dir, record)
    context = _trial_context(sweep, base_dict, name, data_dir, train_rows, sweep_dir)
    context |= {"tracking_uri": uri, "parent_run_id": parent, "experiment_id": exp_id}
    tuner = _tuner(sweep, base.scaling, resources, context, storage, name, resumed)
    rows, interrupted = trial_rows(tuner.fit(), sweep, sweep_dir)
    if interrupted:
        ended = sum(1 for r in rows if r["status"] != "UNFINISHED")
        message = f"sweep {name} stopped after {ended} of {sweep.trials} trials"
        raise SweepInterrupted(f"{message}; re-run the same command to continue it")
    return finish_sweep(sweep, rows, sweep_dir, name, uri, parent, record, resumed, data_dir)


def _sweep_folder(sweep_dir: Path) -> bool:
    """Create the sweep folder; True when it holds a sweep to continue (``Tuner.restore``)."""
    from ray import tune

    resumed = tune.Tuner.can_restore(str(sweep_dir))
    if sweep_dir.exists() and not resumed:
        raise InputError(f"{sweep_dir} exists but holds no sweep to resume; pick a new --name")
    sweep_dir.mkdir(parents=True, exist_ok=True)
    return resumed


def _check_inputs(sweep: SweepConfig, base, data_dir, train_rows: int | None):
    """(base config as a dict, data URI or path, train rows, cluster resources), checked."""
    import ray

    base_dict = base.to_dict()
    check_space(sweep, base_dict, TrainJobConfig.from_dict)
    data_dir = Location.parse(data_dir).expanduser().resolve().value  # a URI stays one
    if train_rows is None:
        train_rows = validate_split(data_dir, "train")
        validate_split(data_dir, "val")
    resources = ray.cluster_resources()
    check_fits(sweep, base.scaling, resources)
    return base_dict, data_dir, train_rows, resources


def _trial_context(sweep, base_dict, name, data_dir, train_rows, sweep_dir: Path) -> dict:
    """What every trial gets from the driver (``trial_main``'s ``context``), MLflow aside."""
    return {
        "name": name,
        "base": base_dict,
        "fixed": sweep.fixed(),
        "epochs": sweep.epochs,
        "train_rows": train_rows,
        "shards": {s: [str(p) for p in list_shards(data_dir, s)] for s in ("train", "val")},
        "sweep_dir": str(sweep_dir),
        "train_storage": str(sweep_dir / TRAIN_RUNS),
    }


def _tuner(sweep, scaling, resources, context: dict, storage: Path, name: str, resumed: bool):
    """The sweep's ``Tuner``: restored from the sweep folder when ``resumed``, else new."""
    from ray import tune

    trainable = tune.with_resources(
        tune.with_parameters(trial_main, context=context), {"CPU": sweep.trial_cpus}
    )
    if resumed:
        return tune.Tuner.restore(
            str(storage / name), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    return _new_tuner(sweep, scaling, resources, trainable, storage, name)


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


def _parent_run(sweep, base_dict, workspace, name, sweep_dir, record):
    """The sweep's parent run: reopened from the sweep record, or created."""
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
    write_record(sweep_dir / SWEEP_RECORD, record)
    return uri, logger.run_id, exp_id
