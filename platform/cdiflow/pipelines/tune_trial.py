"""One trial of a sweep: a Tune function trainable that runs one Ray Train run.

Each trial (``trial_main``, in its own Ray actor) opens a child run (tag
``mlflow.parentRunId``), then builds and fits a ``TorchTrainer`` over the per-worker
function ``cdiflow.pipelines.train_worker.train_worker``, with
``ray.train.RunConfig(name=<trial name>, callbacks=[TuneReportCallback()])`` so every
epoch's report reaches Tune (and ASHA). A resumed trial refits with the same run name
and storage path, which continues from its latest Train checkpoint. Its record
(``TRIAL_RECORDS/<trial id>.json``: child run id, checkpoint, metrics) is what the sweep's
summary reads. Ray and MLflow are imported inside functions.
"""

from __future__ import annotations

from pathlib import Path

from cdiflow.formats.atomic import atomic_write_json
from cdiflow.pipelines.cluster import train_env_defaults
from cdiflow.pipelines.tracking_store import RunLogger
from cdiflow.pipelines.train_config import TrainJobConfig
from cdiflow.pipelines.train_worker import build_trainer
from cdiflow.pipelines.tune_space import trial_config

TRIAL_RECORDS = "trial-records"  # one JSON per trial: child run id, checkpoint, metrics
TRAIN_RUNS = "train-runs"  # Ray Train run folders of the trials


def trial_main(params: dict, context: dict) -> None:
    """Tune function trainable: one training run with ``params`` applied to the base config.

    ``context`` (from ``tune.with_parameters``) holds the base training config, the
    fixed values and epochs, the data paths, where Train keeps its runs, and the MLflow
    URI plus parent run.
    """
    import ray.tune
    from ray.tune.integration.ray_train import TuneReportCallback

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
    write_record(record, {"trial": trial, "run_id": run_id, "params": params})

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
    write_record(
        record,
        {"trial": trial, "run_id": run_id, "params": params, "checkpoint": checkpoint,
         "metrics": metrics, "finished": True},
    )  # fmt: skip
    if run_id:
        _set_status(uri, run_id, "FINISHED")


def _child_run(context: dict, trial: str, job, params: dict) -> str:
    """The trial's MLflow run under the sweep's parent run (reused when a trial resumes)."""
    from mlflow import MlflowClient

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


def write_record(path: Path, data: dict) -> None:
    """A sweep or trial record, written atomically (indented JSON)."""
    atomic_write_json(path, data, indent=1, default=str)
