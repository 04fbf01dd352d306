"""cohere-core as the phasing benchmark's anchor: one pattern at a time, in a subprocess.

cohere-core (numpy) reseeds numpy's global RNG from the clock and imports pyplot, so it
runs in a child process (``python benchmarks/phasing_cohere.py IN OUT``) with the same
thread limits as the engine it is compared with. Its layouts: see ``to_cohere_layout``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "platform"))

from cdiflow.metrics import chi2  # noqa: E402
from cdiflow.physics.fft import centred_fft2  # noqa: E402

# cohere's shrink-wrap settings, the same as the benchmark's ``SHRINKWRAP``
SHRINKWRAP = {"start": 100, "every": 10, "sigma": 1.0, "threshold": 0.1}
_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


def to_cohere_layout(x: np.ndarray) -> np.ndarray:
    """Centred object -> cohere's direct-space layout.

    cohere keeps data fftshift-ed (origin in the corner) and uses ``ifftn`` as its forward
    transform, so ``ifftn(z)`` matches our ``fftn(ifftshift(x))`` when ``z`` is the point
    inversion ``z[n] = ifftshift(x)[-n]``.
    """
    z = np.fft.ifftshift(x, axes=(-2, -1))
    return np.roll(np.flip(z, axis=(-2, -1)), 1, axis=(-2, -1))


def from_cohere_layout(z: np.ndarray) -> np.ndarray:
    """Inverse of ``to_cohere_layout`` (point inversion is its own inverse)."""
    return np.fft.fftshift(np.roll(np.flip(z, axis=(-2, -1)), 1, axis=(-2, -1)), axes=(-2, -1))


def _stub_matplotlib() -> None:
    """cohere-core imports pyplot (for its live viewers) at import time; phasing never
    plots. Where matplotlib is absent (a bare GPU image) stand-in modules let it import."""
    import types

    mpl = types.ModuleType("matplotlib")
    mpl.pyplot = types.ModuleType("matplotlib.pyplot")
    mpl.widgets = types.ModuleType("matplotlib.widgets")
    mpl.widgets.Slider = object
    sys.modules.update(
        {"matplotlib": mpl, "matplotlib.pyplot": mpl.pyplot, "matplotlib.widgets": mpl.widgets}
    )


def _params(schedule: str, cont: str) -> dict:
    return {
        "algorithm_sequence": schedule,
        "shrink_wrap_trigger": [SHRINKWRAP["start"], SHRINKWRAP["every"]],
        "shrink_wrap_type": "GAUS",
        "shrink_wrap_threshold": SHRINKWRAP["threshold"],
        "shrink_wrap_gauss_sigma": SHRINKWRAP["sigma"],
        "hio_beta": 0.9,
        "continue_dir": cont,
    }


def cohere_worker(in_path: str, out_path: str) -> None:
    """Run in a subprocess: phase every pattern of ``in_path`` with cohere-core (numpy)."""
    import contextlib
    import io

    try:
        import matplotlib.pyplot  # noqa: F401
    except ImportError:
        _stub_matplotlib()
    import cohere_core.controller.phasing as ph

    data = np.load(in_path)
    images, times = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i, (m, start, support) in enumerate(
            zip(data["modulus"], data["start"], data["support"], strict=True)
        ):
            np.save(os.path.join(tmp, "data.npy"), m.astype(np.float32))
            cont = os.path.join(tmp, f"cont{i}")
            os.makedirs(cont)
            np.save(os.path.join(cont, "image.npy"), to_cohere_layout(start * support))
            np.save(os.path.join(cont, "support.npy"), to_cohere_layout(support).astype(np.int64))
            with contextlib.redirect_stdout(io.StringIO()):
                params = _params(str(data["schedule"]), cont)
                rec = ph.create_rec(params, os.path.join(tmp, "data.npy"), "np", -1, debug=True)
                t0 = time.perf_counter()
                rec.iterate()
                times.append(time.perf_counter() - t0)
            images.append(from_cohere_layout(np.asarray(rec.ds_image)))
    np.savez(out_path, image=np.stack(images), seconds=np.array(times))


def run_cohere(modulus, start, support, schedule: str, threads: int = 1) -> dict | None:
    """cohere-core in a subprocess; None (with the reason printed) if it is not installed."""
    try:
        import cohere_core  # noqa: F401
    except ImportError:
        print("cohere-core not installed (pip install cohere-core): skipping the anchor")
        return None
    env = {**os.environ, **{v: str(threads) for v in _THREAD_VARS}}
    with tempfile.TemporaryDirectory() as tmp:
        src, dst = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        np.savez(src, modulus=modulus, start=start, support=support, schedule=schedule)
        t0 = time.perf_counter()
        proc = subprocess.run(
            [sys.executable, __file__, src, dst], capture_output=True, text=True, env=env
        )
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(f"cohere-core failed: {proc.stderr[-2000:]}")
            return None
        out = np.load(dst)
        images, seconds = out["image"], out["seconds"]
    final = chi2(
        centred_fft2(torch.from_numpy(images)).abs(),
        torch.from_numpy(modulus).double(),
        fit_scale=True,
    ).numpy()
    n = len(modulus)
    return {
        "patterns": n,
        "threads": threads,
        "seconds_iterating": float(seconds.sum()),
        "seconds_wall": wall,
        "patterns_per_s": n / float(seconds.sum()),
        "final_chi2_median": float(np.median(final)),
        "final_chi2": final.tolist(),
    }


if __name__ == "__main__":
    cohere_worker(sys.argv[1], sys.argv[2])
