"""``cdiflow train``: train the CNN with Ray Train DDP, track in MLflow, register the model."""

from __future__ import annotations

import argparse

from cdiflow.commands.common import add_address, add_verbose, add_workspace, ray_console
from cdiflow.formats.location import location_arg


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the CNN on a Parquet dataset (Ray Train DDP) and register it in MLflow",
        description=(
            "Train the phase-retrieval CNN with Ray Train (DDP over --workers processes; "
            "gloo on CPU, nccl + bf16 on GPU). Checkpoints every epoch; restarts from the "
            "latest one after a worker failure; --resume continues a stopped run. Logs to "
            "MLflow (MLFLOW_TRACKING_URI, or a SQLite store in the workspace), registers "
            "the final weights as a version of cdiflow-cnn and moves the 'champion' alias "
            "only if the validation chi^2 beats the current champion's. Connects to the "
            "Ray cluster at RAY_ADDRESS when set, else starts a local one."
        ),
    )
    parser.add_argument(
        "--data",
        required=True,
        type=location_arg,
        help="dataset folder (manifest.json + splits) or object-storage URI (s3://bucket/prefix)",
    )
    parser.add_argument("--config", help="YAML config (default: cdiflow/configs/train.yaml)")
    parser.add_argument("--workers", type=int, help="number of DDP workers (scaling.workers)")
    parser.add_argument(
        "--gpus", action="store_true", default=None, help="one GPU per worker (scaling.use_gpu)"
    )
    parser.add_argument("--epochs", type=int, help="epochs (train.epochs)")
    parser.add_argument("--name", help="run name (Ray run folder and MLflow run name)")
    parser.add_argument("--resume", action="store_true", help="continue the stopped run --name")
    add_workspace(parser)
    parser.add_argument("--storage-path", help="Ray run storage (default: WORKSPACE/runs)")
    parser.add_argument("--no-register", action="store_true", help="do not register the model")
    add_address(parser)
    add_verbose(parser)
    parser.set_defaults(run=run)


def default_config_path():
    from importlib import resources

    return resources.files("cdiflow") / "configs" / "train.yaml"


def load_config(args: argparse.Namespace):
    """The validated ``TrainJobConfig``: YAML file, then CLI flags on top."""
    from cdiflow.pipelines.train import TrainJobConfig

    overrides = {
        "scaling.workers": args.workers,
        "scaling.use_gpu": args.gpus,
        "train.epochs": args.epochs,
        "run.register": False if getattr(args, "no_register", False) else None,
    }
    path = args.config or str(default_config_path())
    return TrainJobConfig.from_yaml(path, overrides)


def run(args: argparse.Namespace) -> int:
    import json
    import os

    import ray

    from cdiflow.pipelines.cluster import check_mlflow, connect
    from cdiflow.pipelines.train import check_dataset, run_training

    job = load_config(args)  # ConfigError (exit 2) before anything starts
    rows = check_dataset(args.data)  # DatasetError (exit 2) naming file and column
    check_mlflow()  # a server that is down: exit 2 in seconds, not MLflow's retry loop
    joined = ray.is_initialized()
    ray_console(args)
    info = connect(getattr(args, "address", None), num_cpus=os.cpu_count() or 1)
    try:
        outcome = run_training(
            job,
            args.data,
            args.workspace,
            name=args.name,
            resume=args.resume,
            storage_path=args.storage_path,
            rows=rows,
        )
    finally:
        if not joined and info.address == "local":
            ray.shutdown()  # the local Ray this command started; a cluster stays up
    print(json.dumps(outcome.to_dict(), indent=1))
    return 0
