"""Benchmark of synthetic pattern generation: fast forward model against the paper, read literally.

Two speed ratios, measured in one run on one thread (``torch.set_num_threads(1)``; numpy's
FFT and scipy.ndimage are single-threaded):

(a) the diffraction step on the same 3D complex particle: projection along the beam + 2D
    FFT (``fourier_slice_pattern``) against the 3D FFT of the P^3 padded particle + the
    central slice (``literal_slice_pattern``); both on torch, same dtype.
(b) end to end per pattern: ``generate_samples`` (batched, float32, everything included:
    random draws, targets, normalisation) against a straightforward numpy/scipy reading
    of the paper (``naive_sample``): the particle built on a 3D grid in its own frame,
    its correlated phase made on the same axes by 3D FFT filtering of white noise, the
    complex field rotated by trilinear interpolation (``scipy.ndimage.affine_transform``,
    order 1; scipy's default order 3 is 4x slower), its edges smoothed by
    ``scipy.ndimage.gaussian_filter`` in 3D, then the 3D FFT of the P^3 padded complex
    particle and its central slice. It is built on the N^3 object grid and handed its
    parameters and noise (its random draws are not timed): both choices favour it. Row
    (b') times the same reading with the particle built on the P^3 grid that the 3D FFT
    takes (the paper's "complex-valued 3D array"), for reference.

Times are CPU seconds of the calling thread (``time.thread_time``), with the two sides
interleaved, since this machine is shared: a busy neighbour inflates wall-clock time but
barely touches the CPU time of a one-thread computation. Wall-clock figures are recorded
too.

It also checks that the two agree: (a) to float precision, (b) to within the
discretisation differences of the literal reading (chi^2 on the same parameters and noise).

Usage::

    python benchmarks/generation.py            # prints a table, writes results/generation.json
    python benchmarks/generation.py --smoke    # tiny sizes, a few seconds (the unit test runs it)
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import scipy.ndimage
import torch

from cdiflow.formats.atomic import atomic_write_json
from cdiflow.metrics import chi2
from cdiflow.physics.diffraction import (
    fourier_slice_pattern,
    literal_slice_pattern,
)
from cdiflow.physics.fft import normalise_modulus
from cdiflow.physics.generator import (
    GeneratorConfig,
    complex_volumes,
    draw_inputs,
    generate_samples,
    particle_projections,
    reference_global_phase,
    sample_rng,
    targets_from_projection,
)
from cdiflow.physics.particles import quaternion_to_matrix
from run_record import run_record

RESULTS = Path(__file__).resolve().parent / "results" / "generation.json"

# Repeats of (a); rounds of (b), each one fast batch and a few reference patterns.
# pattern_grid: also time the reference built on the P^3 diffraction grid.
FULL = {
    "diffraction_repeats": 9,
    "rounds": 7,
    "batch": 256,
    "naive_per_round": 4,
    "pattern_grid": True,
}
SMOKE = {
    "diffraction_repeats": 2,
    "rounds": 2,
    "batch": 8,
    "naive_per_round": 1,
    "pattern_grid": True,
}


def smoke_config() -> GeneratorConfig:
    """Tiny sizes for a seconds-long run: an 8^3 object in a 16 x 16 pattern."""
    return GeneratorConfig(object_size=8, pattern_size=16, semi_axes=(1.0, 1.5), edge_sigma=0.3)


def naive_sample(
    config: GeneratorConfig, parameters: np.ndarray, noise: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One sample, as the paper reads: 3D grid, interpolated rotation, 3D filters, 3D FFT.

    Parameters
    ----------
    parameters : (12,) as ``cdiflow.physics.generator.PARAMETER_NAMES``.
    noise : (G, G, G) float standard normal noise, indexed (z, y, x); the particle is
        built on this G^3 grid: G = N (the object box) or G = P (the diffraction grid).

    Returns
    -------
    modulus (P, P) max 1, amplitude (N, N) max 1, phase target (N, N) in [0, 1).
    """
    n, p, g = config.object_size, config.pattern_size, noise.shape[-1]
    a, b, c, e, nn, lx, ly, lz = parameters[:8]
    # 1. The superellipsoid (eq. 2) in its own frame on the noise's G^3 grid.
    axis = np.arange(g) - g // 2
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    level = (np.abs(x / a) ** (2 / e) + np.abs(y / b) ** (2 / e)) ** (e / nn)
    inside = level + np.abs(z / c) ** (2 / nn) <= 1
    # 2. The correlated phase (eq. 3) on the same axes: white noise filtered in Fourier
    #    space by the transfer function of exp(-2 (x^2/Lx^2 + y^2/Ly^2 + z^2/Lz^2)).
    kz, ky, kx = np.meshgrid(*(np.fft.fftfreq(g),) * 3, indexing="ij")
    transfer = np.exp(-(math.pi**2) / 2 * ((lx * kx) ** 2 + (ly * ky) ** 2 + (lz * kz) ** 2))
    field = np.fft.ifftn(np.fft.fftn(noise) * transfer).real
    lo, hi = field[inside].min(), field[inside].max()
    phase3d = (field - lo) / max(hi - lo, 1e-300) * config.phase_span - config.phase_span / 2
    # 3. Rotate the complex field by interpolation: output voxel r reads the input at R^T r.
    complex_field = inside * np.exp(1j * phase3d)
    rotation = quaternion_to_matrix(parameters[8:])
    matrix = rotation.T[::-1, ::-1]  # (x, y, z) -> (z, y, x) index order
    centre = np.full(3, g // 2, dtype=np.float64)
    rotated = scipy.ndimage.affine_transform(
        complex_field, matrix, offset=centre - matrix @ centre, order=1
    )
    # 4. Smooth the particle's edges with a 3D Gaussian filter.
    particle = scipy.ndimage.gaussian_filter(rotated, config.edge_sigma)
    # 5. The 3D diffraction of the particle padded to P^3, and its central slice.
    padded = np.zeros((p, p, p), dtype=np.complex128)
    start = p // 2 - g // 2
    padded[start : start + g, start : start + g, start : start + g] = particle
    spectrum = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(padded), norm="ortho"))
    modulus = np.abs(spectrum[p // 2])
    # Targets: amplitude and phase of the projection's central N x N, phase referenced.
    start = g // 2 - n // 2
    projection = particle.sum(axis=0)[start : start + n, start : start + n]
    total = projection.sum()
    projection = projection * np.conj(total) / abs(total)
    amplitude = np.abs(projection) / np.abs(projection).max()
    target = np.where(
        amplitude > config.support_threshold, (np.angle(projection) + np.pi) / (2 * np.pi), 0.0
    )
    return modulus / modulus.max(), amplitude, np.minimum(target, 1 - 1e-7)


def _interleaved(functions: dict, rounds: int, calls: int = 1) -> dict[str, dict[str, float]]:
    """Least CPU and wall seconds per call of each function over rounds, blocks interleaved.

    Each round times a block of ``calls`` calls of every function in turn, so the two
    sides of a ratio see the same load, while a block of short calls runs with its own
    data in cache (as it does inside a batch). Other processes only ever add time, so
    the least time of a block is the best estimate of its own cost (as ``timeit``
    advises). One warm-up round is not counted.
    """
    cpu: dict[str, list[float]] = {name: [] for name in functions}
    wall: dict[str, list[float]] = {name: [] for name in functions}
    for round_ in range(rounds + 1):
        for name, function in functions.items():
            c0, w0 = time.thread_time(), time.perf_counter()
            for _ in range(calls):
                function()
            if round_:
                cpu[name].append((time.thread_time() - c0) / calls)
                wall[name].append((time.perf_counter() - w0) / calls)
    return {name: {"cpu": min(cpu[name]), "wall": min(wall[name])} for name in functions}


def bench_diffraction(config: GeneratorConfig, seed: int, repeats: int) -> dict:
    """(a) Projection + 2D FFT against 3D FFT + slice, on the same complex particle."""
    parameters, noise = draw_inputs(config, [sample_rng(seed, 0)])
    volume = complex_volumes(config, parameters, noise)  # (1, N, N, N) complex64
    p = config.pattern_size
    times = _interleaved(
        {
            "fast": lambda: fourier_slice_pattern(volume, p),
            "literal": lambda: literal_slice_pattern(volume, p),
        },
        rounds=repeats,
        calls=10,
    )
    a, b = fourier_slice_pattern(volume, p), literal_slice_pattern(volume, p)
    fast, literal = times["fast"], times["literal"]
    return {
        "fast_ms": 1e3 * fast["cpu"],
        "literal_ms": 1e3 * literal["cpu"],
        "ratio": literal["cpu"] / fast["cpu"],
        "wall_fast_ms": 1e3 * fast["wall"],
        "wall_literal_ms": 1e3 * literal["wall"],
        "wall_ratio": literal["wall"] / fast["wall"],
        "max_relative_difference": float((a - b).abs().max() / b.abs().max()),
        "dtype": str(volume.dtype),
    }


def bench_end_to_end(config: GeneratorConfig, seed: int, sizes: dict) -> dict:
    """(b) ``generate_samples`` per pattern against ``naive_sample`` per pattern."""
    batch, rounds = sizes["batch"], sizes["rounds"]
    count = sizes["naive_per_round"]
    parameters, noise = draw_inputs(config, [sample_rng(seed, i) for i in range(count)])
    noise64 = noise.double().numpy()
    offset = [0]

    def fast_batch():  # fresh indices each call: nothing is cached between batches
        generate_samples(config, seed, range(offset[0], offset[0] + batch))
        offset[0] += batch

    def naive_patterns():
        for i in range(count):
            naive_sample(config, parameters[i], noise64[i])

    p = config.pattern_size
    big_noise = np.random.default_rng(seed).standard_normal((count, p, p, p))

    def naive_patterns_on_pattern_grid():
        for i in range(count):
            naive_sample(config, parameters[i], big_noise[i])

    functions = {"fast": fast_batch, "naive": naive_patterns}
    if sizes["pattern_grid"]:
        functions["naive_pattern_grid"] = naive_patterns_on_pattern_grid
    times = _interleaved(functions, rounds)
    fast_s, naive_s = times["fast"]["cpu"] / batch, times["naive"]["cpu"] / count
    # Sanity: on the same parameters and noise, the literal reading gives the same
    # patterns up to its discretisation (interpolated rotation, periodic phase filter).
    reference = generate_samples(config, seed, range(count))
    chi2s = [
        chi2(
            torch.from_numpy(naive_sample(config, parameters[i], noise64[i])[0]),
            torch.from_numpy(reference.modulus[i]).double(),
            fit_scale=True,
        ).item()
        for i in range(count)
    ]
    extra = {}
    if "naive_pattern_grid" in times:
        big_s = times["naive_pattern_grid"]["cpu"] / count
        extra = {
            "naive_pattern_grid_ms_per_pattern": 1e3 * big_s,
            "pattern_grid_ratio": big_s / fast_s,
        }
    return {
        **extra,
        "fast_ms_per_pattern": 1e3 * fast_s,
        "fast_patterns_per_s": 1 / fast_s,
        "naive_ms_per_pattern": 1e3 * naive_s,
        "ratio": naive_s / fast_s,
        "wall_fast_ms_per_pattern": 1e3 * times["fast"]["wall"] / batch,
        "wall_naive_ms_per_pattern": 1e3 * times["naive"]["wall"] / count,
        "wall_ratio": (times["naive"]["wall"] / count) / (times["fast"]["wall"] / batch),
        "batch": batch,
        "naive_vs_fast_chi2_median": statistics.median(chi2s),
    }


def bench_stages(config: GeneratorConfig, seed: int, sizes: dict) -> dict:
    """Where the fast generator's time goes, in ms per pattern (one batch, median)."""
    batch, repeats = sizes["batch"], sizes["rounds"]
    rngs = lambda: [sample_rng(seed, i) for i in range(batch)]  # noqa: E731
    parameters, noise = draw_inputs(config, rngs())
    projection = reference_global_phase(particle_projections(config, parameters, noise))

    def diffraction_and_targets():
        targets_from_projection(projection, config.support_threshold)
        normalise_modulus(fourier_slice_pattern(projection.unsqueeze(-3), config.pattern_size))

    stages = {
        "random draws": lambda: draw_inputs(config, rngs()),
        "particles + projection": lambda: particle_projections(config, parameters, noise),
        "diffraction + targets": diffraction_and_targets,
    }
    times = _interleaved(stages, repeats)
    return {name: 1e3 * t["cpu"] / batch for name, t in times.items()}


def environment() -> dict:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def print_table(results: dict) -> None:
    a, b = results["diffraction"], results["end_to_end"]
    rows = [
        ("(a) diffraction step, ms", a["fast_ms"], a["literal_ms"]),
        ("(b) end to end, ms/pattern", b["fast_ms_per_pattern"], b["naive_ms_per_pattern"]),
    ]
    if "naive_pattern_grid_ms_per_pattern" in b:
        rows.append(
            (
                "(b') reference on P^3 grid",
                b["fast_ms_per_pattern"],
                b["naive_pattern_grid_ms_per_pattern"],
            )
        )
    print(f"{'':32s} {'fast':>10s} {'reference':>10s} {'ratio':>8s}")
    for name, fast, ref in rows:
        print(f"{name:32s} {fast:10.3f} {ref:10.3f} {ref / fast:7.1f}x")
    print(
        f"(a) fast: projection + 2D FFT; reference: 3D FFT of the padded particle + slice; "
        f"max relative difference {a['max_relative_difference']:.1e}"
    )
    print(
        f"(b) fast: generate_samples, batch {b['batch']}, {b['fast_patterns_per_s']:.0f} "
        f"patterns/s on one thread; reference: numpy/scipy reading of the paper; "
        f"chi2 between the two on the same draws {b['naive_vs_fast_chi2_median']:.2e}"
    )
    stages = ", ".join(f"{k} {v:.3f}" for k, v in results["fast_stages_ms_per_pattern"].items())
    print(f"fast generator, ms/pattern: {stages}")
    env = results["environment"]
    print(
        f"CPU ms of one thread, sides interleaved; wall-clock ratios (a) {a['wall_ratio']:.1f}x, "
        f"(b) {b['wall_ratio']:.1f}x; load average {env['load_average']} on "
        f"{env['cpu_count']} cores"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON file to write")
    args = parser.parse_args(argv)
    load_before = list(os.getloadavg())
    config = smoke_config() if args.smoke else GeneratorConfig()
    sizes = SMOKE if args.smoke else FULL
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = {
            **run_record("generation.py", load_before),  # threads: the 1 measured at
            "benchmark": "generation",
            "smoke": args.smoke,
            "seed": args.seed,
            "config": config.to_dict(),
            "sizes": sizes,
            "diffraction": bench_diffraction(config, args.seed, sizes["diffraction_repeats"]),
            "end_to_end": bench_end_to_end(config, args.seed, sizes),
            "fast_stages_ms_per_pattern": bench_stages(config, args.seed, sizes),
            "environment": environment(),
        }
    finally:
        torch.set_num_threads(threads)
    print_table(results)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.output, results, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
