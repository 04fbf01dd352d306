"""Benchmark of synthetic pattern generation: fast forward model against the paper, read literally.

Two speed ratios, measured in one run on one thread (``torch.set_num_threads(1)``; numpy's
FFT and scipy.ndimage are single-threaded):

(a) the diffraction step on the same 3D complex particle: projection along the beam + 2D
    FFT (``fourier_slice_pattern``) against the 3D FFT of the P^3 padded particle + the
    central slice (``literal_slice_pattern``); both on torch, same dtype.
(b) end to end per pattern: ``generate_samples`` (batched, float32, everything included:
    random draws, targets, normalisation) against a straightforward numpy/scipy reading
    of the paper (``naive_sample``): the particle built on a 3D grid in its own frame,
    rotated by trilinear interpolation (``scipy.ndimage.affine_transform``), its edges
    smoothed by ``scipy.ndimage.gaussian_filter`` in 3D, the correlated phase made by 3D
    FFT filtering of white noise, then the 3D FFT of the P^3 padded complex particle and
    its central slice. The reference is handed its parameters and noise (its random draws
    are not timed), which favours it.

It also checks that the two agree: (a) to float precision, (b) to within the
discretisation differences of the literal reading (chi^2 on the same parameters and noise).

Usage::

    python benchmarks/generation.py            # prints a table, writes results/generation.json
    python benchmarks/generation.py --smoke    # tiny sizes, a few seconds (the unit test runs it)
"""

from __future__ import annotations

import argparse
import json
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

RESULTS = Path(__file__).resolve().parent / "results" / "generation.json"

# (repeats of (a), fast batches, fast batch size, reference patterns)
FULL = {"diffraction_repeats": 40, "fast_batches": 7, "batch": 256, "naive_patterns": 24}
SMOKE = {"diffraction_repeats": 3, "fast_batches": 2, "batch": 8, "naive_patterns": 2}


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
    noise : (N, N, N) float standard normal noise, indexed (z, y, x).

    Returns
    -------
    modulus (P, P) max 1, amplitude (N, N) max 1, phase target (N, N) in [0, 1).
    """
    n, p = config.object_size, config.pattern_size
    a, b, c, e, nn, lx, ly, lz = parameters[:8]
    # 1. The superellipsoid (eq. 2) in its own frame on an N^3 grid.
    axis = np.arange(n) - n // 2
    z, y, x = np.meshgrid(axis, axis, axis, indexing="ij")
    level = (np.abs(x / a) ** (2 / e) + np.abs(y / b) ** (2 / e)) ** (e / nn)
    shape = (level + np.abs(z / c) ** (2 / nn) <= 1).astype(np.float64)
    # 2. Rotate the grid by interpolation: output voxel r samples the input at R^T r.
    rotation = quaternion_to_matrix(parameters[8:])
    matrix = rotation.T[::-1, ::-1]  # (x, y, z) -> (z, y, x) index order
    centre = np.full(3, n // 2, dtype=np.float64)
    rotated = scipy.ndimage.affine_transform(
        shape, matrix, offset=centre - matrix @ centre, order=1
    )
    # 3. Smooth the edges with a 3D Gaussian filter.
    amplitude3d = scipy.ndimage.gaussian_filter(rotated, config.edge_sigma)
    # 4. Correlated phase (eq. 3): white noise times the kernel's transfer function.
    kz, ky, kx = np.meshgrid(*(np.fft.fftfreq(n),) * 3, indexing="ij")
    transfer = np.exp(-(math.pi**2) / 2 * ((lx * kx) ** 2 + (ly * ky) ** 2 + (lz * kz) ** 2))
    field = np.fft.ifftn(np.fft.fftn(noise) * transfer).real
    inside = rotated >= 0.5
    lo, hi = field[inside].min(), field[inside].max()
    phase3d = (field - lo) / max(hi - lo, 1e-300) * config.phase_span - config.phase_span / 2
    particle = amplitude3d * np.exp(1j * phase3d)
    # 5. The 3D diffraction of the padded particle, and its central slice.
    padded = np.zeros((p, p, p), dtype=np.complex128)
    start = p // 2 - n // 2
    padded[start : start + n, start : start + n, start : start + n] = particle
    spectrum = np.fft.fftshift(np.fft.fftn(np.fft.ifftshift(padded), norm="ortho"))
    modulus = np.abs(spectrum[p // 2])
    # Targets: amplitude and phase of the projection, global phase referenced.
    projection = particle.sum(axis=0)
    total = projection.sum()
    projection = projection * np.conj(total) / abs(total)
    amplitude = np.abs(projection) / np.abs(projection).max()
    target = np.where(
        amplitude > config.support_threshold, (np.angle(projection) + np.pi) / (2 * np.pi), 0.0
    )
    return modulus / modulus.max(), amplitude, np.minimum(target, 1 - 1e-7)


def _timed(function, repeats: int) -> list[float]:
    """Wall-clock seconds of ``repeats`` calls, after one warm-up call."""
    function()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return times


def bench_diffraction(config: GeneratorConfig, seed: int, repeats: int) -> dict:
    """(a) Projection + 2D FFT against 3D FFT + slice, on the same complex particle."""
    parameters, noise = draw_inputs(config, [sample_rng(seed, 0)])
    volume = complex_volumes(config, parameters, noise)  # (1, N, N, N) complex64
    p = config.pattern_size
    fast = _timed(lambda: fourier_slice_pattern(volume, p), repeats)
    literal = _timed(lambda: literal_slice_pattern(volume, p), repeats)
    a, b = fourier_slice_pattern(volume, p), literal_slice_pattern(volume, p)
    fast_ms, literal_ms = 1e3 * statistics.median(fast), 1e3 * statistics.median(literal)
    return {
        "fast_ms": fast_ms,
        "literal_ms": literal_ms,
        "ratio": literal_ms / fast_ms,
        "max_relative_difference": float((a - b).abs().max() / b.abs().max()),
        "dtype": str(volume.dtype),
    }


def bench_end_to_end(config: GeneratorConfig, seed: int, sizes: dict) -> dict:
    """(b) ``generate_samples`` per pattern against ``naive_sample`` per pattern."""
    batch = sizes["batch"]
    offset = [0]

    def fast_batch():  # fresh indices each call: nothing is cached between batches
        generate_samples(config, seed, range(offset[0], offset[0] + batch))
        offset[0] += batch

    fast = _timed(fast_batch, sizes["fast_batches"])
    fast_ms = 1e3 * statistics.median(fast) / batch
    count = sizes["naive_patterns"]
    parameters, noise = draw_inputs(config, [sample_rng(seed, i) for i in range(count)])
    noise64 = noise.double().numpy()
    naive_times, chi2s = [], []
    reference = generate_samples(config, seed, range(count))
    for i in range(count):
        start = time.perf_counter()
        modulus, _, _ = naive_sample(config, parameters[i], noise64[i])
        naive_times.append(time.perf_counter() - start)
        chi2s.append(
            chi2(
                torch.from_numpy(modulus),
                torch.from_numpy(reference.modulus[i]).double(),
                fit_scale=True,
            ).item()
        )
    naive_ms = 1e3 * statistics.median(naive_times[1:] or naive_times)
    return {
        "fast_ms_per_pattern": fast_ms,
        "fast_patterns_per_s": 1e3 / fast_ms,
        "naive_ms_per_pattern": naive_ms,
        "ratio": naive_ms / fast_ms,
        "batch": batch,
        "naive_vs_fast_chi2_median": statistics.median(chi2s),
    }


def bench_stages(config: GeneratorConfig, seed: int, sizes: dict) -> dict:
    """Where the fast generator's time goes, in ms per pattern (one batch, median)."""
    batch, repeats = sizes["batch"], sizes["fast_batches"]
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
    return {
        name: 1e3 * statistics.median(_timed(fn, repeats)) / batch for name, fn in stages.items()
    }


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
    print(f"load average {env['load_average']} on {env['cpu_count']} cores; torch threads 1")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, a few seconds")
    parser.add_argument("--seed", type=int, default=2021)
    parser.add_argument("--output", type=Path, default=RESULTS, help="JSON file to write")
    args = parser.parse_args(argv)
    config = smoke_config() if args.smoke else GeneratorConfig()
    sizes = SMOKE if args.smoke else FULL
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        results = {
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
    tmp = args.output.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(results, indent=2) + "\n")
    tmp.replace(args.output)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
