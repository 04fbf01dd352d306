"""The fused CPU loop's FFT pair: FFTW (pyfftw) or torch's, whichever the CPU favours.

The loop (``cdiflow.phasing.runner``, fused path) needs, per iteration, the unscaled
forward transform of the iterate (a new array: the iterate itself stays valid, the kept
best may be it) and the unscaled inverse of the projected spectrum (in place); the
projection's pass applies both normalisations (``cpu_kernels``).

On the 2-core AMD EPYC box torch's FFT (MKL, which takes slower code paths on CPUs that
are not Intel's) ran the pair at 64 x 64, batch 32, 1 thread in 752 us, FFTW in 337 us;
at 128 x 128, batch 8, 764 against 494 us (docs/phasing.md). On an Intel Xeon box it was
the other way round: MKL 317 us, FFTW 432 us at 64 x 64, and 368 against 565 us at
128 x 128 (MKL 1.3x faster end to end). So ``backend()`` picks torch's FFT where torch
runs MKL on an Intel CPU and FFTW everywhere else (AMD, and ARM, where torch's FFT is
pocketfft); ``CDIFLOW_CPU_FFT=fftw|torch`` overrides it. The rule reads the CPU's vendor,
not a timing, for the same reason as the plans below. The plans are
``FFTW_ESTIMATE``'s: made from FFTW's heuristics, not by timing, so a run's rounding, and
with it the answer of a long HIO run, does not depend on what the machine was doing while
it planned (``FFTW_MEASURE`` picks by timing). Above ``FFTW_MAX_SIZE`` those plans were
4-9x slower than MKL (3.2 ms against 0.41 ms per transform at 256 x 256), so larger
patterns keep torch's FFT. Without pyfftw, or for an array FFTW's SIMD plan cannot take
(misaligned), torch's FFT runs: same transform, to rounding.

pyfftw is imported on first use, not when cdiflow is imported. Plans are cached per
thread (an FFTW plan holds its arrays, so two threads may not share one) and made under a
lock (FFTW's planner is not thread-safe).
"""

from __future__ import annotations

import functools
import os
import threading
from pathlib import Path

import torch

from cdiflow.errors import ConfigError

FFTW_MAX_SIZE = 128  # the largest P (P x P patterns) the FFTW path takes
BACKEND_ENV = "CDIFLOW_CPU_FFT"
BACKENDS = ("auto", "fftw", "torch")
_DIMS2 = (-2, -1)
_PLAN_LOCK = threading.Lock()
_LOCAL = threading.local()


@functools.cache
def _pyfftw():
    try:
        import pyfftw
    except ImportError:
        return None
    return pyfftw


def available() -> bool:
    """Whether pyfftw imports (the FFTW path can run)."""
    return _pyfftw() is not None


@functools.cache
def backend() -> str:
    """This process's CPU FFT for patterns up to ``FFTW_MAX_SIZE``: "fftw" or "torch".

    ``CDIFLOW_CPU_FFT`` (auto | fftw | torch; default auto) decides; auto means torch's
    FFT where it is MKL on an Intel CPU, FFTW elsewhere. FFTW needs pyfftw: without it
    the answer is "torch" whatever the setting.
    """
    choice = backend_setting()
    if not available():
        return "torch"
    if choice == "auto":
        mkl_on_intel = torch.backends.mkl.is_available() and cpu_vendor() == "GenuineIntel"
        return "torch" if mkl_on_intel else "fftw"
    return choice


def backend_setting() -> str:
    """``CDIFLOW_CPU_FFT`` as given (auto when unset); a ``ConfigError`` naming the
    choices for any other value. The CLI checks it before a verb runs, so a typo fails
    at once with one line rather than inside every phasing task."""
    choice = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if choice not in BACKENDS:
        raise ConfigError(f"{BACKEND_ENV}={choice!r}: expected one of {', '.join(BACKENDS)}")
    return choice


def cpu_vendor(cpuinfo: str | None = None) -> str:
    """The CPU's vendor string as /proc/cpuinfo (or the ``cpuinfo`` text) gives it
    ("GenuineIntel", "AuthenticAMD"), or "" where there is none (not Linux, or an ARM CPU,
    whose cpuinfo has no vendor_id)."""
    text = cpuinfo
    if text is None:
        try:
            text = Path("/proc/cpuinfo").read_text(errors="replace")
        except OSError:
            return ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "vendor_id":
            return value.strip()
    return ""


def fft2(x: torch.Tensor) -> torch.Tensor:
    """``torch.fft.fft2(x, norm="backward")`` (unscaled) of a (B, P, P) complex CPU tensor,
    as a new tensor; ``x`` is not touched."""
    if not _takes(x):
        return torch.fft.fft2(x, norm="backward")
    out = torch.empty_like(x, memory_format=torch.contiguous_format)
    if not _takes(out):  # misaligned: torch's FFT, not FFTW's slower unaligned plan
        return torch.fft.fft2(x, norm="backward")
    forward, _ = _plans(tuple(x.shape), x.dtype, torch.get_num_threads())
    forward(x.numpy(), out.numpy())
    return out


def ifft2_(spectrum: torch.Tensor) -> torch.Tensor:
    """In place where FFTW runs: ``torch.fft.ifft2(spectrum, norm="forward")`` (unscaled)
    of a (B, P, P) complex CPU tensor. Returns the result (``spectrum`` itself, or a new
    tensor on the torch path)."""
    if not _takes(spectrum):
        return torch.fft.ifft2(spectrum, norm="forward")
    _, inverse = _plans(tuple(spectrum.shape), spectrum.dtype, torch.get_num_threads())
    view = spectrum.numpy()
    inverse(view, view)
    return spectrum


def _takes(t: torch.Tensor) -> bool:
    """Whether the FFTW path runs ``t``: FFTW is this process's backend, and ``t`` is a
    small enough contiguous complex CPU tensor, aligned for the SIMD plans."""
    if t.device.type != "cpu" or backend() != "fftw":
        return False
    pyfftw = _pyfftw()
    return (
        pyfftw is not None
        and t.dtype in (torch.complex64, torch.complex128)
        and t.ndim == 3
        and t.shape[-1] <= FFTW_MAX_SIZE
        and t.is_contiguous()
        and t.data_ptr() % pyfftw.simd_alignment == 0
    )


def _plans(shape: tuple, dtype: torch.dtype, threads: int) -> tuple:
    """This thread's (forward, inverse) callables for ``shape``: each takes
    (input, output) numpy arrays of that shape, the inverse in place."""
    cache = _LOCAL.__dict__.setdefault("plans", {})
    key = (shape, dtype, threads)
    if key not in cache:
        with _PLAN_LOCK:
            cache[key] = _make_plans(shape, dtype, threads)
    return cache[key]


def _make_plans(shape: tuple, dtype: torch.dtype, threads: int) -> tuple:
    pyfftw = _pyfftw()
    kind = "complex64" if dtype == torch.complex64 else "complex128"
    a, b = pyfftw.empty_aligned(shape, kind), pyfftw.empty_aligned(shape, kind)
    common = dict(axes=_DIMS2, flags=("FFTW_ESTIMATE",), threads=threads)
    forward = pyfftw.FFTW(a, b, direction="FFTW_FORWARD", **common)
    inverse = pyfftw.FFTW(b, b, direction="FFTW_BACKWARD", **common)
    return _runner(forward), _runner(inverse)


def _runner(plan):
    """``plan`` on new arrays: the raw execute, no normalisation (pyfftw's ``__call__``
    would scale the inverse by 1/n and copy a misaligned input)."""

    def run(src, dst):
        plan.update_arrays(src, dst)
        plan.execute()

    return run
