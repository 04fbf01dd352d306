"""``cdiflow tune``: a Ray Tune sweep (ASHA + Optuna) over training runs, tracked in MLflow."""

from __future__ import annotations

import argparse
import json
import sys
from importlib import resources

from cdiflow.commands.common import add_address, add_verbose, add_workspace, ray_console
from cdiflow.formats.location import location_arg

DESCRIPTION = """\
Sweep the training config with Ray Tune: an Optuna searcher (seeded) proposes trials,
an ASHA scheduler stops weak ones early, and every trial is a Ray Train run of the CNN.
The space (loss weights, learning rate, schedule, decay, warm-up, batch size, model
width by default) comes from a YAML file; see cdiflow/configs/tune.yaml.

MLflow (MLFLOW_TRACKING_URI, or a SQLite store in the workspace): a parent run for the
sweep with a child run per trial. The best trial is registered as a new version of
cdiflow-cnn with alias 'candidate'; it becomes 'champion' only when it beats the current
champion's validation chi^2. summary.csv and trials.png go to the sweep folder
(WORKSPACE/sweeps/NAME) and the parent run.

Interrupted (Ctrl-C)? Re-run the same command with the same --name: the sweep continues.
"""

EPILOG = """\
examples:
  cdiflow tune --data workspace/data --trials 16 --epochs 20 --name lr-sweep
  cdiflow tune --data /shared/data --config my-space.yaml --address 10.0.0.5:6379

Exit codes: 0 done, 2 bad input (invalid space, dataset, unreachable cluster or MLflow),
130 interrupted (re-run to continue).
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "tune",
        help="hyper-parameter sweep over training runs (Ray Tune, ASHA + Optuna, MLflow)",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--data",
        required=True,
        type=location_arg,
        help="dataset folder (manifest + splits) or object-storage URI (s3://bucket/prefix)",
    )
    parser.add_argument("--config", help="sweep YAML (default: cdiflow/configs/tune.yaml)")
    parser.add_argument(
        "--train-config", help="training YAML the trials start from (default: train.yaml)"
    )
    parser.add_argument("--trials", type=int, help="number of trials")
    parser.add_argument("--epochs", type=int, help="epochs per trial (ASHA max_t)")
    parser.add_argument("--workers", type=int, help="Train workers per trial")
    parser.add_argument("--name", help="sweep name; an existing sweep of that name continues")
    add_workspace(parser)
    parser.add_argument("--storage-path", help="where sweeps live (default: WORKSPACE/sweeps)")
    add_address(parser)
    add_verbose(parser)
    parser.add_argument(
        "--connect-timeout", type=float, default=5.0, help="seconds to reach Ray / MLflow"
    )
    parser.set_defaults(run=run)
    return parser


def _resource(name: str):
    return resources.files("cdiflow") / "configs" / name


def load_configs(args: argparse.Namespace):
    """The validated (SweepConfig, TrainJobConfig): YAML files, then the flags on top."""
    from cdiflow.pipelines.train import TrainJobConfig
    from cdiflow.pipelines.tune_space import SweepConfig

    sweep = SweepConfig.from_yaml(
        args.config or str(_resource("tune.yaml")),
        {"trials": args.trials, "epochs": args.epochs},
    )
    base = TrainJobConfig.from_yaml(
        args.train_config or str(_resource("train.yaml")),
        {"scaling.workers": args.workers},
    )
    return sweep, base


def run(args: argparse.Namespace) -> int:
    from cdiflow.pipelines.cluster import check_mlflow, connect
    from cdiflow.pipelines.tune import SweepInterrupted, run_sweep
    from cdiflow.pipelines.tune_space import check_space

    sweep, base = load_configs(args)  # ConfigError (exit 2) before anything starts
    from cdiflow.pipelines.train import TrainJobConfig, check_dataset

    check_space(sweep, base.to_dict(), TrainJobConfig.from_dict)
    rows = check_dataset(args.data)  # DatasetError (exit 2) before Ray starts
    check_mlflow(timeout_s=args.connect_timeout)  # ClusterUnavailable (exit 2) in seconds
    import ray

    started_here = not ray.is_initialized()
    ray_console(args)
    info = connect(args.address, timeout_s=args.connect_timeout, dashboard=True)
    try:
        outcome = run_sweep(
            sweep,
            base,
            args.data,
            args.workspace,
            name=args.name,
            storage_path=args.storage_path,
            train_rows=rows["train"],
        )
    except SweepInterrupted as exc:
        print(f"cdiflow tune: interrupted: {exc}", file=sys.stderr)
        return 130
    finally:
        if started_here and info.address == "local":
            ray.shutdown()
    print(json.dumps(outcome.to_dict(), indent=1, default=str))
    return 0
