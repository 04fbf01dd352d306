"""``cdiflow train``: train the CNN with Ray Train DDP, track in MLflow, register the model."""

from __future__ import annotations

import argparse
import json
import os
from importlib import resources

from cdiflow.commands.common import add_address, add_verbose, add_workspace, ray_console
from cdiflow.errors import InputError
from cdiflow.formats.location import location_arg

DESCRIPTION = """\
Train the phase-retrieval CNN with Ray Train (DDP over --workers processes; gloo on CPU,
nccl + bf16 on GPU). Checkpoints every epoch; restarts from the latest one after a worker
failure; --resume continues a stopped run. Logs to MLflow (MLFLOW_TRACKING_URI, or a
SQLite store in the workspace), registers the final weights as a version of cdiflow-cnn
and moves the 'champion' alias only if the validation chi^2 beats the current
champion's. Connects to the Ray cluster at RAY_ADDRESS when set, else starts a local one.
"""

EPILOG = """\
data:
  --data DIR         a data set written by `cdiflow generate` (train and val splits)
  --generate N       no disk: the index ranges of `cdiflow generate --num-patterns N`,
                     generated on Ray Data. Every epoch trains on 0.95 N new patterns
                     (epoch 0 is that data set's train split, epoch e the next range of
                     train indices); validation is its fixed val split (N / 20).
                     --preset and --generate-config (a `cdiflow generate` YAML: seed,
                     generator, chunk_size) choose the patterns. --resume: same flags.
  Masked data (the realistic preset) train a model with the mask as a second input
  channel (model.mask_channel: true, set automatically).

examples:
  cdiflow train --data workspace/data --epochs 20
  cdiflow generate --preset realistic --num-patterns 20000 --out workspace/realistic
  cdiflow train --data workspace/realistic --epochs 20
  cdiflow train --generate 20000 --preset realistic --epochs 200 --name realistic-fly
"""


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train the CNN on a Parquet dataset or generated data (Ray Train DDP), register it",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DESCRIPTION,
    )
    data = parser.add_mutually_exclusive_group(required=True)
    data.add_argument(
        "--data",
        type=location_arg,
        help="dataset folder (manifest.json + splits) or object-storage URI (s3://bucket/prefix)",
    )
    data.add_argument(
        "--generate",
        type=int,
        metavar="N",
        help="generate on the fly, no disk: 0.95 N new training patterns every epoch and "
        "N / 20 fixed validation ones (the index ranges of `cdiflow generate --num-patterns N`)",
    )
    parser.add_argument(
        "--preset",
        choices=("paper", "realistic"),
        help="with --generate: the paper's noise-free patterns (default) or realistic ones",
    )
    parser.add_argument(
        "--generate-config",
        metavar="YAML",
        help="with --generate: a `cdiflow generate` config (seed, generator, chunk_size)",
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


def load_stream(args: argparse.Namespace):
    """The ``DatasetConfig`` to generate on the fly (``--generate``), or None (``--data``)."""
    if args.generate is None:
        if args.preset or args.generate_config:
            raise InputError("--preset and --generate-config go with --generate N")
        return None
    from cdiflow.pipelines.generate import GenerateConfig

    overrides = {"num_patterns": args.generate, "preset": args.preset}
    return GenerateConfig.from_yaml(args.generate_config, overrides).dataset()


def run(args: argparse.Namespace) -> int:
    import ray

    from cdiflow.pipelines.cluster import check_mlflow, connect
    from cdiflow.pipelines.train import check_dataset, run_training

    job = load_config(args)  # ConfigError (exit 2) before anything starts
    stream = load_stream(args)
    data = stream if stream is not None else args.data
    rows = check_dataset(data)  # DatasetError (exit 2) naming file and column
    check_mlflow()  # a server that is down: exit 2 in seconds, not MLflow's retry loop
    joined = ray.is_initialized()
    ray_console(args)
    info = connect(getattr(args, "address", None), num_cpus=os.cpu_count() or 1)
    try:
        outcome = run_training(
            job,
            data,
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
