"""The phasing benchmark's inputs and provenance: patterns at any size, the engine of an
earlier commit, the machine and the commit (see ``benchmarks/phasing.py``)."""

from __future__ import annotations

import importlib
import os
import platform as std_platform
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "platform"))

from cdiflow.phasing import cpu_fft, runner  # noqa: E402
from cdiflow.physics.fft import centred_fft2, normalise_modulus, pad_centre  # noqa: E402


def test_patterns(n: int, seed: int, size: int = 64) -> np.ndarray:
    """(n, size, size) float32 centred moduli (see the module docstring)."""
    if size == 64:
        from cdiflow.physics.generator import GeneratorConfig, generate_samples

        return generate_samples(GeneratorConfig(), seed, np.arange(n)).modulus
    rng = np.random.default_rng(seed)
    box = size // 2
    r = np.arange(box) - box // 2
    yy, xx = np.meshgrid(r, r, indexing="ij")
    f2 = np.fft.fftfreq(box)[:, None] ** 2 + np.fft.fftfreq(box)[None, :] ** 2
    lowpass, smooth = np.exp(-f2 * (box / 8.0) ** 2), np.exp(-f2 * 20.0)
    out = []
    for _ in range(n):
        a, b = box * rng.uniform(0.2, 0.4, 2)
        e = rng.uniform(1.5, 3.0)
        inside = (np.abs(yy / a) ** e + np.abs(xx / b) ** e) < 1
        amp = np.clip(np.real(np.fft.ifft2(np.fft.fft2(inside) * smooth)), 0, None)
        noise = np.real(np.fft.ifft2(np.fft.fft2(rng.standard_normal((box, box))) * lowpass))
        out.append(amp * np.exp(1j * np.pi * noise / np.abs(noise).max()))
    obj = pad_centre(torch.from_numpy(np.stack(out)).to(torch.complex64), size)
    return normalise_modulus(centred_fft2(obj).abs()).numpy().astype(np.float32)


def load_baseline(rev: str):
    """``cdiflow.phasing.runner`` as it was at git revision ``rev``, with the whole
    ``cdiflow`` package of that revision behind it (its kernels, shrink-wrap and physics,
    so the engine is the old one throughout), as a module beside today's (or None).

    The old tree is extracted to a temporary folder and imported while today's
    ``cdiflow`` modules are set aside; the old modules keep their references to each
    other, and today's come back afterwards, so both engines run in this process."""
    sha = subprocess.run(
        ["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
        cwd=HERE.parent, capture_output=True, text=True,
    ).stdout.strip()  # fmt: skip
    if not sha:
        print(f"baseline {rev}: not a commit")
        return None
    root = Path(tempfile.mkdtemp(prefix="cdiflow-baseline-"))
    archive = subprocess.run(
        ["git", "archive", sha, "platform/cdiflow"], cwd=HERE.parent, capture_output=True
    )
    subprocess.run(["tar", "-x", "-C", str(root)], input=archive.stdout, check=True)
    today = {k: v for k, v in sys.modules.items() if k == "cdiflow" or k.startswith("cdiflow.")}
    for name in today:
        del sys.modules[name]
    sys.path.insert(0, str(root / "platform"))
    try:
        module = importlib.import_module("cdiflow.phasing.runner")
    finally:
        sys.path.remove(str(root / "platform"))
        for name in [k for k in sys.modules if k == "cdiflow" or k.startswith("cdiflow.")]:
            del sys.modules[name]
        sys.modules.update(today)
    module.REVISION = sha
    return module


def machine() -> dict:
    model = std_platform.processor() or std_platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            names = [ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")]
        model = names[0] if names else model
    except OSError:
        pass
    return {
        "cpu": model,
        "cpu_count": os.cpu_count(),
        "l2_cache_bytes_per_core": runner.cache_bytes_per_core(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        # which FFT the CPU loop ran (cpu_fft.backend: torch's MKL on Intel, FFTW elsewhere)
        "cpu_fft": cpu_fft.backend(),
    }


def git_sha() -> str | None:
    try:
        from cdiflow.pipelines.tracking import git_sha as sha
    except ImportError:  # a bare image without the pipeline extras
        return None
    return sha(HERE.parent)
