"""CPU training throughput on Ray Train: samples/s with 1 and 2 DDP workers.

In one process: writes a seeded Parquet dataset, measures the pure-PyTorch loop on
in-memory batches (no Ray; the baseline, at 1 and 2 intra-op threads, in the
channels_last layout every training path uses; then at 1 thread the default layout and
channels_last in turns), then runs
``cdiflow.pipelines.train.run_training`` (Ray Data streaming, gloo DDP) with 1 and 2
workers and reads the samples/s of the last epoch (the first one warms up). Ratios against
the baseline are what to compare across machines; machines here are shared, so the load
average is written next to them.

    PYTHONPATH=platform python benchmarks/train_throughput.py [--samples 1024 --epochs 3]
    PYTHONPATH=platform python benchmarks/train_throughput.py --smoke --out /tmp/t.json
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def write_dataset(root: Path, num_patterns: int, seed: int = 0) -> None:
    """A seeded data set in the project's format, written in this process (no Ray)."""
    from cdiflow.formats import dataset_folder
    from cdiflow.formats.layout import DatasetConfig

    config = DatasetConfig(seed=seed, num_patterns=num_patterns, test_patterns=1, shards=4)
    dataset_folder.write_dataset(root, config)


def pure_torch_rate(
    model_config: dict, root: Path, batch_size: int, threads: int, layout: str = "channels_last"
) -> float:
    """Samples/s of ``train_one_epoch`` over in-memory batches (second of two epochs).

    ``layout``: ``channels_last`` (``training_layout``, as every training path runs) or
    ``contiguous`` (the default layout the model is built in).
    """
    import torch

    from cdiflow.models import ModelConfig, build_model, training_layout
    from cdiflow.pipelines.data import read_split_arrays
    from cdiflow.train import TrainConfig, build_optimizer, build_scheduler, train_one_epoch

    torch.set_num_threads(threads)
    arrays = {k: torch.from_numpy(v) for k, v in read_split_arrays(root, "train").items()}
    count = arrays["modulus"].shape[0]
    batches = [
        {k: v[i : i + batch_size] for k, v in arrays.items()} for i in range(0, count, batch_size)
    ]
    torch.manual_seed(0)
    model = build_model(ModelConfig.from_dict(model_config))
    if layout == "channels_last":
        model = training_layout(model)
    config = TrainConfig(epochs=2, batch_size=batch_size)
    optimizer = build_optimizer(model, config)
    scheduler = build_scheduler(optimizer, config, len(batches))
    rate = 0.0
    for _ in range(2):
        t0 = time.perf_counter()
        train_one_epoch(model, batches, optimizer, scheduler, config.loss, "cpu")
        rate = count / (time.perf_counter() - t0)
    return rate


def layout_turns(model_config: dict, root: Path, batch_size: int, turns: int) -> dict:
    """Pure-loop samples/s at 1 thread in each layout, the layouts taking turns (the
    machine's speed drifts between runs, so only rates taken in turns compare)."""
    out = {"contiguous": [], "channels_last": []}
    for _ in range(turns):
        for layout, rates in out.items():
            rates.append(pure_torch_rate(model_config, root, batch_size, 1, layout))
    return out


def layout_ratio(turns: dict) -> float:
    """Median over turns of channels_last's rate over the contiguous one's in that turn."""
    import statistics

    pairs = zip(turns["channels_last"], turns["contiguous"], strict=True)
    return statistics.median(new / old for new, old in pairs)


def ray_rate(model_config: dict, root: Path, workspace: Path, workers: int, args) -> dict:
    from cdiflow.pipelines.train import TrainJobConfig, run_training

    job = TrainJobConfig.from_dict(
        {
            "model": model_config,
            "train": {"epochs": args.epochs, "batch_size": args.batch_size},
            "scaling": {"workers": workers, "cpus_per_worker": args.cpus_per_worker},
            "run": {"max_failures": 0},
        }
    )
    t0 = time.perf_counter()
    outcome = run_training(job, root, workspace, name=f"throughput-{workers}w", track=False)
    return {
        "workers": workers,
        "samples_per_s": outcome.metrics["samples_per_s"],
        "epoch_seconds": outcome.metrics["epoch_seconds"],
        "wall_seconds_with_startup": time.perf_counter() - t0,
    }


def main() -> None:
    load_before = list(os.getloadavg())
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1024, help="train + val patterns (95/5)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32, help="per worker")
    parser.add_argument("--base-width", type=int, default=16)
    parser.add_argument("--cpus-per-worker", type=float, default=0.5)
    parser.add_argument("--smoke", action="store_true", help="tiny and quick (tests)")
    parser.add_argument(
        "--out", default=str(Path(__file__).parent / "results" / "train_throughput.json")
    )
    args = parser.parse_args()
    if args.smoke:
        args.samples, args.epochs, args.base_width, args.batch_size = 64, 1, 4, 16
    model_config = {"base_width": args.base_width}

    import ray

    from run_record import run_record

    with tempfile.TemporaryDirectory(prefix="cdiflow-throughput-") as tmp:
        root = Path(tmp) / "data"
        write_dataset(root, args.samples)
        baseline = {
            f"{t}_threads": pure_torch_rate(model_config, root, args.batch_size, t) for t in (1, 2)
        }
        layouts = layout_turns(model_config, root, args.batch_size, turns=1 if args.smoke else 3)
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=200 * 1024 * 1024,
            _node_ip_address="127.0.0.1",
        )
        try:
            runs = [ray_rate(model_config, root, Path(tmp) / "ws", w, args) for w in (1, 2)]
        finally:
            ray.shutdown()
    result = {
        **run_record("train_throughput.py", load_before),
        "benchmark": "train_throughput",
        "smoke": args.smoke,
        "samples": args.samples,
        "epochs": args.epochs,
        "batch_size_per_worker": args.batch_size,
        "model": model_config,
        "cpus_per_worker": args.cpus_per_worker,
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "pure_torch_samples_per_s": baseline,
        "layout_turns_1_thread": layouts,
        "ratio_channels_last_vs_contiguous_1_thread": layout_ratio(layouts),
        "ray_train": runs,
        "ratio_2_workers_vs_1": runs[1]["samples_per_s"] / runs[0]["samples_per_s"],
        "ratio_1_worker_vs_pure_torch_1_thread": runs[0]["samples_per_s"] / baseline["1_threads"],
    }
    from cdiflow.formats.atomic import atomic_write_json

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, result, indent=2)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
