"""Time-to-chi^2 and large-batch inference speed of the CNN: pure PyTorch, GPU or CPU.

No Ray, no MLflow (the GPU image has neither): training data come from the generator
in worker processes (``--workers``, one thread each) and stream into device memory while
training runs, so the network keeps seeing new patterns; or from a Parquet dataset
(``--data DIR``). Training uses AdamW with a one-cycle schedule laid out over the time
budget (``--budget-s``) and bf16 autocast on CUDA; the modulus chi^2 (eq. 5, scale
fitted) on a held-out set is evaluated every ``--eval-every`` steps and training stops
at ``--target-chi2`` (the paper's 0.019) or at the budget. Then it reports chi^2 on the
300-pattern test set (indices 0..299 of the seed; training indices start at 10**7, so
they never overlap), and inference patterns/s of the inference-optimised model at a
large batch in bf16 and fp32.

    PYTHONPATH=platform python benchmarks/gpu_train.py --out results.json   # ~6 min, H100
    PYTHONPATH=platform python benchmarks/gpu_train.py --smoke --out /tmp/smoke.json
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import multiprocessing
import os
import platform as stdlib_platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

from cdiflow.formats.atomic import atomic_path, atomic_write_json
from cdiflow.losses import LossWeights
from cdiflow.models import (
    ModelConfig,
    build_model,
    count_flops,
    inference_model,
    save_weights,
    training_layout,
)
from cdiflow.models.cnn import widened, with_angle_head, with_mask_channel
from cdiflow.models.weights import load_weights
from cdiflow.physics.generator import GeneratorConfig
from cdiflow.pipelines.tracking_store import git_sha
from cdiflow.train import (
    TrainConfig,
    evaluate,
    lr_factor,
    recalibrate_batchnorm,
    train_one_epoch,
)
from cdiflow.train.data import KEYS, chunks, generate_chunk, generate_tensors, ordered_batches
from run_record import run_record  # stdlib + torch + tracking_store: fine on the GPU image

VAL_START = 1000
TRAIN_START = 10**7


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="tiny CPU run (< 60 s), for tests")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda")
    p.add_argument("--out", default=None, help="write the results JSON here")
    p.add_argument("--budget-s", type=float, default=300.0, help="training time budget")
    p.add_argument("--target-chi2", type=float, default=0.019)
    p.add_argument(
        "--max-steps",
        type=int,
        default=0,
        help="stop after this many steps (0: no limit); the LR cycle then ends at them",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="Parquet dataset folder (else generate)")
    p.add_argument("--workers", type=int, default=max(1, (os.cpu_count() or 2) - 1))
    p.add_argument("--initial-patterns", type=int, default=32768)
    p.add_argument("--max-patterns", type=int, default=1_000_000, help="cap of the stream")
    p.add_argument("--val-patterns", type=int, default=1024)
    p.add_argument("--test-patterns", type=int, default=300, help="indices 0.. of the seed")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--depth", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument(
        "--optimizer",
        choices=("adamw", "sgd"),
        default="adamw",
        help="AdamW (default) or the paper's SGD with momentum 0.9; one-cycle LR either way",
    )
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-fraction", type=float, default=0.1)
    p.add_argument(
        "--twin-invariant", action="store_true", help="real-space loss against the closer twin"
    )
    p.add_argument(
        "--phase-head",
        choices=("target", "angle"),
        default="target",
        help="the paper's phase-target channel, or two channels whose angle is the phase "
        "(sharp wrap lines; the phase loss is then taken on the circle); with "
        "--init-weights a target-head model gains a fresh angle head, the rest kept",
    )
    p.add_argument(
        "--bn-batches", type=int, default=16, help="batches that recompute BN stats before eval"
    )
    p.add_argument("--eval-every", type=int, default=200, help="steps between evaluations")
    p.add_argument("--infer-batch", type=int, default=None, help="default 8192 GPU, 256 CPU")
    p.add_argument("--save-weights", default=None, help="save the trained model here")
    p.add_argument(
        "--init-weights",
        default=None,
        help="start from these saved weights (a fresh LR cycle: a warm restart); "
        "--width/--depth then come from the file; with --preset realistic a model without "
        "a mask channel gains one, its weights at zero (it starts as the loaded model)",
    )
    p.add_argument(
        "--widen",
        type=int,
        default=1,
        help="with --init-weights: start from the loaded model made this many times wider, "
        "every channel repeated (Net2Net), so the wider net starts from its answers",
    )
    p.add_argument(
        "--preset",
        choices=("paper", "realistic"),
        default="paper",
        help="training data: the paper's noise-free patterns, or realistic ones (counts "
        "1e4-1e9, background, beamstop and gaps, edge smoothing); the model then takes the "
        "mask as a second input channel. The test is run on both presets either way",
    )
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="save the run here after every evaluation; resume from it if it exists",
    )
    args = p.parse_args(argv)
    if args.smoke:
        args.device = "cpu"
        args.budget_s = min(args.budget_s, 3.0)
        args.workers = 0
        args.initial_patterns, args.max_patterns, args.val_patterns = 64, 64, 16
        args.test_patterns = 16
        args.width, args.depth, args.batch_size, args.eval_every = 4, 2, 16, 2
        args.infer_batch, args.bn_batches = 32, 2
    return args


# steps between looks at the generator workers' finished chunks
ABSORB_EVERY = 25


class PatternStream:
    """Training patterns in device memory, topped up from generator worker processes."""

    def __init__(self, args, config: GeneratorConfig, device: torch.device):
        self.args, self.config, self.device = args, config, device
        self.next_index = TRAIN_START
        self.pool = None
        self.pending: list[concurrent.futures.Future] = []
        if args.workers > 0:
            ctx = multiprocessing.get_context("spawn")
            self.pool = concurrent.futures.ProcessPoolExecutor(args.workers, mp_context=ctx)
        t0 = time.perf_counter()
        first = self._indices(args.initial_patterns)
        if self.pool is not None:
            futures = [self._submit(c) for c in chunks(first, 256)]
            parts = [f.result() for f in futures]
            self.data = _to_device(_concat(parts), device)
        else:
            self.data = _to_device(generate_tensors(config, args.seed, first), device)
        self.generation_rate = len(first) / (time.perf_counter() - t0)
        self._top_up_queue()

    @classmethod
    def from_arrays(cls, args, data: dict[str, torch.Tensor], device: torch.device):
        """A fixed stream of ``data`` (a parquet data set): no workers, nothing to top up."""
        stream = cls.__new__(cls)
        stream.args, stream.config, stream.device = args, None, device
        stream.pool, stream.pending, stream.generation_rate = None, [], None
        stream.data = _to_device(data, device)
        stream.next_index = TRAIN_START + stream.count
        return stream

    def _indices(self, n: int) -> np.ndarray:
        out = np.arange(self.next_index, self.next_index + n)
        self.next_index += n
        return out

    def _submit(self, idx) -> concurrent.futures.Future:
        return self.pool.submit(generate_chunk, self.config.to_dict(), self.args.seed, idx)

    def _top_up_queue(self) -> None:
        if self.pool is None:
            return
        while len(self.pending) < 2 * self.args.workers and self.next_index - TRAIN_START < (
            self.args.max_patterns
        ):
            self.pending.append(self._submit(self._indices(256)))

    def absorb(self) -> None:
        """Move finished chunks into device memory (non-blocking)."""
        done = [f for f in self.pending if f.done()]
        if done:
            self.pending = [f for f in self.pending if not f.done()]
            self._append(_to_device(_concat([f.result() for f in done]), self.device))
        self._top_up_queue()

    @property
    def data(self) -> dict[str, torch.Tensor]:
        """The patterns so far: views of the first ``count`` rows of the buffers."""
        return {k: v[: self.count] for k, v in self._buffers.items()}

    @data.setter
    def data(self, value: dict[str, torch.Tensor]) -> None:
        self._buffers, self.count = value, next(iter(value.values())).shape[0]

    def _append(self, new: dict[str, torch.Tensor]) -> None:
        """Copy ``new`` in after the last pattern. The buffers grow by doubling: a
        ``torch.cat`` of the whole stream per chunk copied gigabytes every 25 steps."""
        n = next(iter(new.values())).shape[0]
        capacity = next(iter(self._buffers.values())).shape[0]
        if self.count + n > capacity:
            size = max(2 * capacity, self.count + n)
            grown = {}
            for k, v in self._buffers.items():
                grown[k] = v.new_empty((size, *v.shape[1:]))
                grown[k][: self.count] = v[: self.count]
            self._buffers = grown
        for k, v in new.items():
            self._buffers[k][self.count : self.count + n] = v
        self.count += n

    def batches(self, steps: int, gen: torch.Generator, deadline: float = float("inf")):
        """``steps`` random batches (with replacement), fewer if ``deadline`` passes, but
        never none: the deadline can pass between the caller's budget check and the first
        batch (under load it does), and an empty round has nothing to train on.
        Finished chunks join every ``ABSORB_EVERY`` steps, so the workers never wait for
        an evaluation round to hand their patterns over."""
        for step in range(steps):
            if step and time.perf_counter() >= deadline:
                return
            if step and step % ABSORB_EVERY == 0:
                self.absorb()
            idx = torch.randint(self.count, (self.args.batch_size,), generator=gen)
            yield {k: v[idx.to(self.device)] for k, v in self._buffers.items()}

    def close(self) -> None:
        if self.pool is not None:
            for f in self.pending:
                f.cancel()
            self.pool.shutdown(wait=False, cancel_futures=True)


def _concat(parts) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.concatenate([p[k] for p in parts])) for k in parts[0]}


def _to_device(data: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in data.items()}


def read_parquet(folder: str) -> dict[str, torch.Tensor]:
    """Columns modulus / amplitude / phase of every *.parquet under ``folder``."""
    import pyarrow.parquet as pq

    files = sorted(Path(folder).rglob("*.parquet"))
    if not files:
        sys.exit(f"no *.parquet files under {folder}")
    parts = []
    for f in files:
        table = pq.read_table(f, columns=list(KEYS))
        part = {}
        for k in KEYS:
            column = table.column(k).combine_chunks()
            if hasattr(column, "to_numpy_ndarray"):  # fixed_shape_tensor extension
                arr = column.to_numpy_ndarray()
            else:
                arr = np.stack([np.asarray(v, dtype=np.float32) for v in column.to_pylist()])
            side = 64 if k == "modulus" else 32
            part[k] = arr.astype(np.float32).reshape(len(table), side, side)
        parts.append(part)
    return _concat(parts)


def config_loss(args) -> LossWeights:
    return LossWeights(twin_invariant=args.twin_invariant, phase_wrapped=args.phase_head == "angle")


def train(args, model, stream, val, device) -> dict:
    config = TrainConfig.recommended(
        epochs=1000, batch_size=args.batch_size, lr=args.lr, weight_decay=args.weight_decay,
        warmup_epochs=1000 * args.warmup_fraction, bf16=True,
        loss=config_loss(args),
    )  # fmt: skip
    if args.optimizer == "sgd":
        optimizer = torch.optim.SGD(
            model.parameters(), lr=config.lr, momentum=0.9, weight_decay=config.weight_decay
        )
    else:
        optimizer = torch.optim.AdamW(
            model.parameters(), lr=config.lr, weight_decay=config.weight_decay
        )
    start = time.perf_counter()

    def by_time(step: int) -> float:  # one-cycle over the time budget (or --max-steps)
        progress = (time.perf_counter() - start) / args.budget_s
        if args.max_steps:  # equal steps for every model of a sweep, whatever the load
            progress = max(progress, step / args.max_steps)
        return lr_factor(config, int(min(1.0, progress) * config.epochs * 1000), 1000)

    autocast = device.type == "cuda"
    gen = torch.Generator().manual_seed(args.seed)
    history, reached, steps = [], None, 0
    saved = read_run_state(args.checkpoint)
    if saved is not None:  # continue the time budget where the stopped run left it
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        gen.set_state(saved["generator"])
        history, steps = saved["history"], int(saved["steps"])
        start -= float(saved["elapsed"])
        print(f"resumed at {saved['elapsed']:.0f}s, step {steps}", flush=True)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, by_time)
    elapsed = history[-1]["seconds"] if history else 0.0
    # a run resumed with budget left trains at least one round, however slow the restart
    owed = saved is not None and elapsed < args.budget_s
    while owed or not (history and time.perf_counter() - start >= args.budget_s):
        deadline = float("inf") if owed else start + args.budget_s
        owed = False
        round_steps = args.eval_every
        if args.max_steps:
            round_steps = max(1, min(round_steps, args.max_steps - steps))
        batches = stream.batches(round_steps, gen, deadline=deadline)
        stats = train_one_epoch(
            model, batches, optimizer, scheduler, config.loss, device, autocast, config.grad_clip
        )
        steps += int(stats["patterns"]) // args.batch_size
        recalibrate_batchnorm(model, stream.batches(args.bn_batches, gen), device)
        metrics = evaluate(model, ordered_batches(val, 1024), device, config.loss, autocast)
        elapsed = time.perf_counter() - start
        row = {
            "seconds": elapsed,
            "steps": steps,
            "train_patterns_per_s": stats["patterns_per_s"],
            "distinct_patterns": stream.count,
            "lr": stats["lr"],
            "train_loss": stats["loss"],
        }
        row |= {f"val_{k}": v for k, v in metrics.items()}
        history.append(row)
        print(
            f"{elapsed:7.1f}s step {steps:6d} loss {stats['loss']:.4f} val chi2 modulus "
            f"{metrics['chi2_modulus']:.4f} amp {metrics['chi2_amplitude']:.4f} phase "
            f"{metrics['chi2_phase']:.4f} (twin-aware {metrics['chi2_amplitude_twin_aware']:.4f} "
            f"{metrics['chi2_phase_twin_aware']:.4f}) | {stats['patterns_per_s']:.0f} patt/s, "
            f"{row['distinct_patterns']} distinct",
            flush=True,
        )
        if args.checkpoint:
            write_run_state(args.checkpoint, model, optimizer, gen, history, steps, elapsed)
        if reached is None and metrics["chi2_modulus"] <= args.target_chi2:
            reached = elapsed
            break
        stream.absorb()
        if time.perf_counter() - start >= args.budget_s or (
            args.max_steps and steps >= args.max_steps
        ):
            break
    return {"history": history, "time_to_target_s": reached, "train_seconds": elapsed}


RUN_STATE_FORMAT = "cdiflow-gpu-train-run"


def write_run_state(path, model, optimizer, gen, history, steps, elapsed) -> None:
    """Everything a stopped run needs to continue: plain tensors and containers only."""
    state = {
        "format": RUN_STATE_FORMAT,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "generator": gen.get_state(),
        "history": history,
        "steps": steps,
        "elapsed": elapsed,
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def read_run_state(path) -> dict | None:
    """The saved run at ``path`` (loaded with weights_only=True), or None if there is none."""
    if not path or not Path(path).is_file():
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    if state.get("format") != RUN_STATE_FORMAT:
        sys.exit(f"{path}: not a gpu_train run checkpoint")
    return state


@torch.inference_mode()
def inference_speed(model, batch: int, device: torch.device, dtype: torch.dtype) -> float:
    fast = inference_model(model).to(device=device, dtype=dtype)
    x = torch.rand(batch, 1, 64, 64, device=device, dtype=dtype)
    x = x.contiguous(memory_format=torch.channels_last)
    for _ in range(3):
        fast(x)
    repeats = 20 if device.type == "cuda" else 2
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(repeats):
        fast(x)
    _sync(device)
    return batch * repeats / (time.perf_counter() - t0)


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(0)
    return f"cpu ({os.cpu_count()} cores, {stdlib_platform.machine()})"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


PRESETS = {"paper": GeneratorConfig(), "realistic": GeneratorConfig.realistic()}


def initial_model(args):
    """A fresh model of --width/--depth, or the one saved at --init-weights."""
    if args.init_weights:
        model, mconfig, _meta = load_weights(args.init_weights)
        if args.widen > 1:  # relative noise 1e-3 breaks the copies' tie, seeded by --seed
            tie = torch.Generator().manual_seed(args.seed)
            model = widened(model, args.widen, noise=1e-3, generator=tie)
            mconfig = model.config
        if args.preset == "realistic":  # the realistic data come with a mask to read
            model = with_mask_channel(model)
            mconfig = model.config
        if args.phase_head == "angle":
            model = with_angle_head(model, seed=args.seed)
            mconfig = model.config
        args.width, args.depth = mconfig.base_width, mconfig.depth
        return model, mconfig
    mask_channel = args.preset == "realistic"
    mconfig = ModelConfig(
        base_width=args.width, depth=args.depth, mask_channel=mask_channel,
        phase_head=args.phase_head,
    )  # fmt: skip
    return build_model(mconfig, seed=args.seed), mconfig


def main(argv=None) -> dict:
    load_before = list(os.getloadavg())
    args = parse_args(argv)
    t_start = time.perf_counter()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    gconfig = PRESETS[args.preset]
    # Worker processes are spawned before CUDA is touched.
    stream = None
    if args.data is None:
        stream = PatternStream(args, gconfig, torch.device("cpu"))
    want_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if want_cuda else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    if stream is None:
        stream = PatternStream.from_arrays(args, read_parquet(args.data), device)
    stream.device = device
    stream.data = _to_device(stream.data, device)
    val_indices = range(VAL_START, VAL_START + args.val_patterns)
    val = _to_device(generate_tensors(gconfig, args.seed, val_indices), device)
    tests = {
        name: _to_device(generate_tensors(config, args.seed, range(args.test_patterns)), device)
        for name, config in PRESETS.items()
    }
    model, mconfig = initial_model(args)
    model = training_layout(model.to(device))
    if args.infer_batch is None:
        args.infer_batch = 8192 if device.type == "cuda" else 256
    print(f"device {device}, data ready in {time.perf_counter() - t_start:.1f}s", flush=True)
    try:
        run = train(args, model, stream, val, device)
    finally:
        stream.close()
    by_preset = {
        name: evaluate(model, ordered_batches(test, 300), device, config_loss(args))
        for name, test in tests.items()
    }
    test_metrics = by_preset[args.preset]
    for name, metrics in by_preset.items():
        rounded = {k: round(v, 5) for k, v in metrics.items()}
        print(f"test {name} ({args.test_patterns}): {json.dumps(rounded)}")
    if args.save_weights:  # before the speed test, so a stopped run keeps its model
        save_weights(args.save_weights, model.cpu(), mconfig, {
            "test_chi2_modulus": test_metrics["chi2_modulus"],
            "test_chi2_amplitude": test_metrics["chi2_amplitude"],
            "test_chi2_phase": test_metrics["chi2_phase"],
        })  # fmt: skip
        model.to(device)
    speeds = {"fp32": inference_speed(model, args.infer_batch, device, torch.float32)}
    if device.type == "cuda":
        speeds["bf16"] = inference_speed(model, args.infer_batch, device, torch.bfloat16)
    print(f"inference patterns/s at batch {args.infer_batch}: {speeds}")
    result = {
        **run_record("gpu_train.py", load_before),  # git_sha: the key below, as before
        "device": _device_name(device),
        "torch": torch.__version__,
        "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,  # "fp32" convs may use TF32
        "args": vars(args),
        "model_config": mconfig.to_dict(),
        "gflop_per_pattern": count_flops(model) / 1e9,
        "generation_patterns_per_s": stream.generation_rate,
        "time_to_target_s": run["time_to_target_s"],
        "train_seconds": run["train_seconds"],
        "final_val": run["history"][-1],
        "test": test_metrics,
        "test_by_preset": by_preset,
        "inference_patterns_per_s": speeds,
        "total_seconds": time.perf_counter() - t_start,
        "git_sha": git_sha(Path(__file__).resolve().parent),
        "loadavg": os.getloadavg(),
        "history": run["history"],
    }
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.out, result, indent=2, default=str)
    return result


if __name__ == "__main__":
    main()
