"""GPU phasing benchmark: the batched engine at 64 x 64 and 256 x 256 (pure torch).

Runs the paper's 600-iteration ER/HIO + shrink-wrap schedule through
``cdiflow.phasing.runner.run_phasing`` on one device and reports patterns/s,
pattern-iterations/s, the FFT-only bound at the same batch size, median chi^2 and peak
memory. ``--graphs`` also runs the same loop with every segment between two shrink-wrap
updates captured once as a CUDA graph and replayed (``GraphedLoop``): the engine has no
host synchronisation and no data-dependent branch on the GPU, so a segment captures as
it is. Needs only torch and numpy (no Ray, MLflow or skimage), so it runs in a bare GPU
image with ``PYTHONPATH=platform``; the whole run takes well under 5 minutes on an H200.
``--smoke`` runs a tiny CPU version (the unit tests), in which the segment loop runs
eagerly and is checked against ``run_phasing``.

Usage::

    PYTHONPATH=platform python benchmarks/gpu_phasing.py --graphs
    PYTHONPATH=platform python benchmarks/gpu_phasing.py --smoke
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "platform"))

from cdiflow.formats.atomic import atomic_write_json  # noqa: E402
from cdiflow.phasing import runner  # noqa: E402
from cdiflow.phasing.schedule import PAPER_SCHEDULE, parse  # noqa: E402
from cdiflow.phasing.shrinkwrap import ShrinkWrap, square_support  # noqa: E402
from cdiflow.physics.farfield import chi2 as chi2_of  # noqa: E402
from cdiflow.physics.farfield import magnitude  # noqa: E402
from cdiflow.physics.fft import centred_fft2, normalise_modulus, pad_centre  # noqa: E402
from run_record import run_record  # noqa: E402  (stdlib + torch only: fine on the GPU image)

# (pattern size, batch) on a GPU: enough patterns to fill an H200 at each size
GPU_SIZES = ((64, 16384), (256, 1024))


def synthetic_patterns(batch: int, device, seed: int = 0, size: int = 64) -> torch.Tensor:
    """(B, size, size) float32 moduli of random ellipses with smooth strong phase.

    The engine's speed does not depend on the content.
    """
    g = torch.Generator(device="cpu").manual_seed(seed)
    box = size // 2
    r = (torch.arange(box, dtype=torch.float32) - box // 2) * (32 / box)
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    p = torch.rand(batch, 6, generator=g)
    a, b = 5 + 6 * p[:, 0, None, None], 5 + 6 * p[:, 1, None, None]
    amp = ((yy / a) ** 2 + (xx / b) ** 2 < 1).float()
    phase = math.pi * torch.sin(yy * p[:, 2, None, None] / 3 + xx * p[:, 3, None, None] / 3)
    obj = pad_centre(torch.polar(amp, phase), size).to(device)
    return normalise_modulus(centred_fft2(obj).abs())


def sync(device) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def fft_bound(x: torch.Tensor, iterations: int) -> float:
    """Pattern-iterations/s of the two FFTs alone at this batch size."""
    y = x
    sync(x.device)
    t0 = time.perf_counter()
    for _ in range(iterations):
        y = torch.fft.ifft2(torch.fft.fft2(y, norm="ortho"), norm="ortho")
    sync(x.device)
    return x.shape[0] * iterations / (time.perf_counter() - t0)


class GraphedLoop:
    """``run_phasing``'s loop as segments between shrink-wrap updates, each a CUDA graph.

    Every tensor a segment touches is static: the iterate, the kept best and its chi^2,
    the coefficients (refilled in place after a support update) and a per-segment chi^2
    block, copied into the curve after each replay. A segment is identified by its
    (algorithm, chi^2 sampled, support-valid) steps; each distinct one is captured once.
    With ``graphs=False`` the same segments run eagerly (the CPU check of this class).
    """

    def __init__(self, st, schedule, shrinkwrap, chi2_every: int = 1, graphs: bool = True):
        self.st, self.sw, self.graphs = st, shrinkwrap, graphs
        self.algorithms = schedule.expand()
        record = runner.sampled_iterations(self.algorithms, chi2_every)
        self.steps = [
            (name, record[k], k == 0 or self.algorithms[k - 1] == "ER")
            for k, name in enumerate(self.algorithms)
        ]
        self.names = set(self.algorithms)
        self.x, self.best_x = st.x.clone(), st.x.clone()
        self.best_chi2 = torch.full((st.batch,), math.inf, device=st.device, dtype=st.real)
        self.coef = st.coefficients(self.names)
        self.chi2 = torch.full((st.batch, len(self.algorithms)), math.nan, device=st.device)
        self.captured: dict = {}
        self.initial = (st.x.clone(), st.s.clone())

    def reset(self) -> None:
        """Back to the start, graphs kept: a second ``run`` only replays."""
        x0, s0 = self.initial
        self.x.copy_(x0)
        self.best_x.copy_(x0)
        self.best_chi2.fill_(math.inf)
        self.chi2.fill_(math.nan)
        self.st.s, self.st.collapsed = s0.clone(), torch.zeros_like(self.st.collapsed)
        self._refill()

    def _refill(self) -> None:
        """The coefficients of the support in force, into the static buffers."""
        for name, (a, c) in self.st.coefficients(self.names).items():
            self.coef[name][1].copy_(c)
            if a is not None:
                self.coef[name][0].copy_(a)

    def _segment(self, steps, block: torch.Tensor) -> None:
        x = self.x
        for j, (name, sampled, valid) in enumerate(steps):
            y, err = self.st.fourier(x, with_chi2=sampled)
            if err is not None:
                block[:, j] = err
                if valid:
                    better = err < self.best_chi2
                    self.best_chi2.copy_(torch.where(better, err, self.best_chi2))
                    self.best_x.copy_(torch.where(better[:, None, None], x, self.best_x))
            x = self.st.update(self.coef[name], x, y)
        self.x.copy_(x)

    def _replay(self, steps) -> torch.Tensor:
        key = tuple(steps)
        if not self.graphs:
            block = torch.full((self.st.batch, len(steps)), math.nan, device=self.st.device)
            self._segment(steps, block)
            return block
        if key not in self.captured:
            self.captured[key] = self._capture(steps)
        graph, block = self.captured[key]
        graph.replay()
        return block

    def _capture(self, steps):
        saved = [t.clone() for t in (self.x, self.best_x, self.best_chi2)]
        block = torch.full((self.st.batch, len(steps)), math.nan, device=self.st.device)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):  # warm-up (cuFFT plans, allocator) off the graph
            self._segment(steps, block)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            self._segment(steps, block)
        for t, s in zip((self.x, self.best_x, self.best_chi2), saved, strict=True):
            t.copy_(s)  # the warm-up advanced the state; capturing ran nothing
        return graph, block

    def run(self) -> dict:
        n = len(self.algorithms)
        cuts = [0, *(k for k in range(1, n) if self.sw and self.sw.due(k)), n]
        for k0, k1 in zip(cuts[:-1], cuts[1:], strict=True):
            if self.sw and self.sw.due(k0):
                self.st.update_support(self.x, self.sw)
                self._refill()
            self.chi2[:, k0:k1] = self._replay(self.steps[k0:k1])
        x = torch.where(self.st.s, self.x, 0)
        final = chi2_of(
            magnitude(torch.fft.fft2(x, norm="ortho")), self.st.m, self.st.w,
            norm=self.st.norm,
        )  # fmt: skip
        better = final <= self.best_chi2
        best = torch.where(better, final, self.best_chi2)
        return {"obj": x, "final_chi2": final, "best_chi2": best, "chi2": self.chi2}


def _inputs(batch: int, size: int, device):
    modulus = synthetic_patterns(batch, device, size=size)
    g = torch.Generator(device="cpu").manual_seed(1)
    phase = 2 * math.pi * torch.rand(batch, size, size, generator=g)
    start = torch.polar(torch.ones(batch, size, size), phase).to(device)
    return modulus, start, square_support(size, size // 2, device=device)


def bench(batch: int, size: int, device, schedule, shrinkwrap, graphs: bool) -> dict:
    modulus, start, upper = _inputs(batch, size, device)
    runner.run_phasing(modulus, start, upper, "5*HIO+5*ER", upper_bound=upper)  # warm-up
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    sync(device)
    t0 = time.perf_counter()
    capture_s = None
    if graphs:  # the first run captures each segment once; the timed one only replays
        st = runner._State.prepare(modulus, start, upper, None, upper, 0.9, shrinkwrap)
        loop = GraphedLoop(st, schedule, shrinkwrap)
        loop.run()
        sync(device)
        capture_s = time.perf_counter() - t0
        loop.reset()
        t0 = time.perf_counter()
        best_chi2 = loop.run()["best_chi2"]
    else:
        kw = dict(shrinkwrap=shrinkwrap, upper_bound=upper)
        best_chi2 = runner.run_phasing(modulus, start, upper, schedule, **kw).best_chi2
    sync(device)
    seconds = time.perf_counter() - t0
    n_iter = len(schedule)
    out = {
        "size": size,
        "batch": batch,
        "cuda_graphs": graphs,
        "iterations": n_iter,
        "seconds": seconds,
        "patterns_per_s": batch / seconds,
        "pattern_iterations_per_s": batch * n_iter / seconds,
        "fft_only_pattern_iterations_per_s": fft_bound(start, min(n_iter, 100)),
        "median_best_chi2": float(best_chi2.median()),
        "seconds_first_run_with_capture": capture_s,
    }
    out["fft_only_patterns_per_s"] = out["fft_only_pattern_iterations_per_s"] / n_iter
    out["share_of_fft_bound"] = out["patterns_per_s"] / out["fft_only_patterns_per_s"]
    if torch.device(device).type == "cuda":
        out["peak_memory_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def check_segments(schedule, shrinkwrap) -> bool:
    """The segment loop (eager) against ``run_phasing``: the same final object."""
    modulus, start, upper = _inputs(3, 64, "cpu")
    st = runner._State.prepare(modulus, start, upper, None, upper, 0.9, shrinkwrap)
    loop = GraphedLoop(st, schedule, shrinkwrap, graphs=False)
    loop.run()
    loop.reset()
    mine = loop.run()  # a reset loop gives the same answer again
    # the segment loop runs torch's kernels (as on a GPU): compare like with like
    ref = runner.run_phasing(modulus, start, upper, schedule, shrinkwrap=shrinkwrap,
                             upper_bound=upper, kernels="torch")  # fmt: skip
    same = torch.allclose(runner._shift(mine["obj"]), ref.obj, atol=1e-6)
    return bool(same and torch.allclose(mine["best_chi2"].float(), ref.best_chi2, rtol=1e-6))


def configurations(args) -> list[tuple[int, int, bool]]:
    """(size, batch, graphs) rows to run."""
    if args.smoke:
        return [(64, 4, False), (128, 2, False)]
    rows = [(p, b) for p, b in GPU_SIZES] if args.batch_sizes is None else [
        (p, int(b)) for p in (64, 256) for b in args.batch_sizes.split(",")
    ]  # fmt: skip
    if torch.device(args.device).type != "cuda":  # a CPU run: batches from the cache
        rows = [(p, runner.batch_for(p)) for p, _ in rows]
    modes = (False, True) if args.graphs else (False,)
    return [(p, b, g) for p, b in rows for g in modes]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", default=None, help="override, at both sizes")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--graphs", action="store_true", help="also replay CUDA graphs")
    parser.add_argument("--smoke", action="store_true", help="tiny CPU run (tests)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--out", default=str(HERE / "results" / "gpu_phasing.json"))
    args = parser.parse_args(argv)
    load_before = list(os.getloadavg())
    if args.threads:
        torch.set_num_threads(args.threads)
    schedule, shrinkwrap = PAPER_SCHEDULE, ShrinkWrap()
    if args.smoke:
        args.device = "cpu"
        schedule, shrinkwrap = parse("2*(10*HIO+5*ER)"), ShrinkWrap(start=10, every=5)
    if args.graphs and torch.device(args.device).type != "cuda":
        parser.error("--graphs needs a CUDA device")
    cuda = torch.device(args.device).type == "cuda"
    name = torch.cuda.get_device_name(0) if cuda else "cpu"
    rows = []
    for size, batch, graphs in configurations(args):
        row = bench(batch, size, args.device, schedule, shrinkwrap, graphs)
        rows.append(row)
        print(
            f"{name} {size}^2 B={batch:6d}{' graphs' if graphs else ''}: "
            f"{row['patterns_per_s']:9.1f} patterns/s "
            f"(FFT-only {row['fft_only_patterns_per_s']:9.1f}, "
            f"{row['share_of_fft_bound']:.0%}), median best chi2 {row['median_best_chi2']:.3g}"
            + (f", peak {row['peak_memory_gib']:.1f} GiB" if "peak_memory_gib" in row else ""),
            flush=True,
        )
    result = {
        **run_record("gpu_phasing.py", load_before),  # git_sha None where no .git travelled
        "device": name,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "schedule": str(schedule),
        "smoke": args.smoke,
        "load_average": os.getloadavg(),
        "segment_loop_matches_run_phasing": check_segments(schedule, shrinkwrap),
        "rows": rows,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, result, indent=1)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
