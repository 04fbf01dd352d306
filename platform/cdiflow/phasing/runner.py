"""The batched phasing runner: B patterns at once, one torch implementation (CPU or GPU).

``run_phasing`` iterates a schedule of projections (``cdiflow.phasing.projections``)
with shrink-wrap (``cdiflow.phasing.shrinkwrap``) over a batch. Inputs and outputs are
centred (``cdiflow.physics.fft``); inside the loop every array is in the *unshifted* FFT
layout (each update is pixel-wise and the support blur is a circular convolution, so
only the four ``fftshift`` calls per iteration change). The transforms are the
ortho-normalised FFTs of ``centred_fft2`` / ``centred_ifft2``; the fused CPU path runs
them unscaled (FFTW's up to 128 x 128, ``cpu_fft``) and applies the normalisation in the
projection's pass.

chi^2 (eq. 5, ``cdiflow.physics.farfield.chi2`` without scale fitting) of the iterate
comes from the magnitudes the modulus projection needs anyway (for HIO/RAAR iterates
with mass outside the support, the error of the iterate itself, as cohere-core reports
it). The answer (``best_obj``) is the iterate of least chi^2 among those that satisfy
the *final* support (after an ER step, and the final support projection): chi^2 falls
as a support grows, so comparing iterates across shrink-wrap updates would favour the
loose supports of early iterations (measured on 100 held-out patterns of the paper's
schedule: the best-of-all-supports iterate had a median support 14% larger than the
final one and a larger image error, 0.072 against 0.064). Each support update therefore
starts the choice afresh; the start itself stays a candidate to the end, so a
refinement never answers worse than the start it was given. ``chi2_every=k`` computes
chi^2 only every k-th iteration and at the last iterate of each ER run (where ER's
falling error is lowest); the curve is NaN elsewhere, the best is chosen among the
sampled valid iterates, and its chi^2 and the final one are exact. ``k=1`` (default) records all.

On CPU the loop's pixel-wise steps (the projection with chi^2, the update, shrink-wrap's
magnitude and cut) run as fused numba kernels (``cpu_kernels``, ``kernels="auto"``);
the torch ops below are what a GPU runs, and the reference the kernels are tested
against. The loop allocates only what the two FFTs return (the projection and chi^2 run
in buffers made once; the update writes into the inverse transform's output), and the
torch path's coefficients are complex (complex-by-real multiplies convert on the fly:
about twice the cost on CPU). Nothing waits for the device: the best is kept with ``torch.where``
(on CPU, where reading a bool costs no synchronisation, "every pattern improved" keeps
a reference instead of a copy). Validation is the caller's job (``refine``); a pattern
whose support collapses keeps its last support, is flagged in ``collapsed``, and the
others go on.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from cdiflow.phasing import cpu_fft, cpu_kernels
from cdiflow.phasing.projections import COEFFICIENTS
from cdiflow.phasing.schedule import Schedule, as_schedule
from cdiflow.phasing.shrinkwrap import ShrinkWrap, gaussian_transfer, shrink_wrap
from cdiflow.physics.farfield import RATIO_EPS, magnitude
from cdiflow.physics.farfield import chi2 as chi2_of

_DIMS2 = (-2, -1)
_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class PhasingResult:
    """What ``run_phasing`` returns; every tensor has the batch as its first axis.

    obj : (B, P, P) complex, centred: the final iterate projected onto the final support.
    best_obj : (B, P, P) complex, centred: the answer: the iterate of least chi^2 in the
        final support, or the start if that was lower (zero outside its support).
    support : (B, P, P) bool, centred: the final support.
    chi2 : (B, n_iter) float32: chi^2 of the iterate entering each iteration (NaN at the
        iterations that ``chi2_every`` skips).
    final_chi2 : (B,) float32: chi^2 of ``obj``.
    best_chi2 : (B,) float32: chi^2 of ``best_obj``.
    collapsed : (B,) bool: shrink-wrap collapsed for this pattern (its support was kept).
    snapshots : {iteration: (B, P, P) complex, centred} the iterate entering each requested
        iteration, projected onto the support in force (for figures such as Fig. 6).
    """

    obj: torch.Tensor
    best_obj: torch.Tensor
    support: torch.Tensor
    chi2: torch.Tensor
    final_chi2: torch.Tensor
    best_chi2: torch.Tensor
    collapsed: torch.Tensor
    snapshots: dict = dataclasses.field(default_factory=dict)


def run_phasing(
    modulus: torch.Tensor,
    start: torch.Tensor,
    support: torch.Tensor,
    schedule: Schedule | str,
    *,
    mask: torch.Tensor | None = None,
    beta: float | torch.Tensor = 0.9,
    shrinkwrap: ShrinkWrap | None = None,
    upper_bound: torch.Tensor | None = None,
    snapshots: tuple[int, ...] = (),
    chi2_every: int = 1,
    threads: int | None = None,
    kernels: str = "auto",
    chunk: int | None = None,
) -> PhasingResult:
    """Run ``schedule`` on a batch of patterns; returns a ``PhasingResult``.

    modulus : (B, P, P) float32/float64, centred measured sqrt(I) (any scale).
    start : (B, P, P) complex, centred start object; it is projected onto ``support`` and
        scaled so that its energy matches the pattern's (Parseval), so its scale is free.
    support : (B, P, P) or (P, P) bool, centred initial support.
    schedule : a ``Schedule`` or its string (``"5*(100*HIO+20*ER)"``).
    mask : optional (B, P, P) or (P, P) bool, True where a pixel is measured; unmeasured
        pixels keep their current Fourier value.
    beta : HIO/RAAR feedback, a float or one value per pattern (B,).
    shrinkwrap : when and how to update the support; None keeps the support fixed.
    upper_bound : (P, P) or (B, P, P) bool upper-bound support for shrink-wrap
        (default: the whole field).
    snapshots : iterations at which to keep a copy of the (support-projected) iterate;
        ``len(schedule)`` means the final object.
    chi2_every : chi^2 every this many iterations (and at each ER run's end); see above.
    threads : CPU parallelism for this call: n single-threaded workers on slices of the
        batch (torch's threads restored after); a single pattern gets
        ``pattern_threads`` of them; None leaves torch's own threads.
    kernels : the pixel-wise steps on CPU: "numba" (``cpu_kernels``: one fused pass
        each), "torch" (torch ops, as on a GPU), or "auto": numba on CPU when it
        imports, torch otherwise. Both give the same iterates to rounding (tested).
    chunk : on CPU, run the batch (each worker's slice) this many patterns at a time, one
        chunk after another; None: ``batch_for``'s size for the threads each run has, 0:
        the batch whole. The iterates do not depend on it (tested).
    """
    if chi2_every < 1:
        raise ValueError(f"chi2_every must be >= 1, got {chi2_every}")
    algorithms = as_schedule(schedule).expand()
    inputs = (modulus, start, support, mask, upper_bound, beta)
    rest = (algorithms, shrinkwrap, set(snapshots), chi2_every, fused_kernels(kernels, modulus))
    batch = modulus.shape[0]
    if threads is not None and batch < 2:
        threads = pattern_threads(modulus.shape[-1], threads)
    if threads is None or threads < 2 or modulus.device.type != "cpu" or batch < 2:
        with engine_threads(threads):
            return _run_in_chunks(inputs, rest, chunk)
    # n single-threaded workers on slices of the batch instead of n OpenMP threads per
    # op: an op's threads wait for each other at its end, and on a loaded machine one of
    # them is often descheduled (measured 20x slower than 1 thread under load 8 on 2
    # cores; the slices were faster than 1 thread). torch ops release the GIL.
    cuts = [batch * i // threads for i in range(threads + 1)]
    parts = [_slice(inputs, batch, a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True)]
    with engine_threads(1), ThreadPoolExecutor(len(parts)) as pool:
        done = list(pool.map(lambda part: _run_in_chunks(part, rest, chunk), parts))
    return _concat(done)


# torch's grain: an elementwise op is split over threads only above this many elements
# (at::internal::GRAIN_SIZE)
_GRAIN = 32768


def useful_threads(pattern_size: int, threads: int) -> int:
    """The threads worth giving one pattern of ``pattern_size``^2 pixels: at most one per
    ``_GRAIN`` pixels. Below it only the FFT would use a second thread, and its OpenMP
    barrier costs more than the split gains (measured at 64 x 64 on 2 loaded cores: one
    scan at 0.44 patterns/s with 2 threads against 3.8 with 1)."""
    return max(1, min(threads, pattern_size * pattern_size // _GRAIN))


def pattern_threads(pattern_size: int, threads: int) -> int:
    """The threads one pattern gets of ``threads``: ``useful_threads``, and no more than
    ``idle_cpus`` (read only when there is more than one to give)."""
    useful = useful_threads(pattern_size, threads)
    return min(useful, idle_cpus()) if useful > 1 else useful


def idle_cpus(loadavg: tuple[str, ...] | None = None) -> int:
    """CPUs this process may use that nothing else is running on now (at least 1).

    One pattern's OpenMP threads wait for each other at every op's end, so one thread
    descheduled by another process stalls them all: on the 2-core Xeon box beside a busy
    process, one 256 x 256 scan ran at 0.31 patterns/s on 2 threads, a tenth of its quiet
    1-thread rate. So ``run_phasing`` gives one pattern no more threads than this. It
    reads the kernel's count of runnable tasks now (/proc/loadavg's fourth field, which
    counts the reader too), not the load average, which lags by a minute. One reading
    often counts a short-lived task too, so it takes the least of a few readings 2 ms
    apart (10 ms in all; a process that computes is runnable in every one).
    ``loadavg`` is that file's texts, for tests. Without the file (not Linux) every CPU
    counts as idle. The iterates do not depend on the thread count beyond rounding.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cpus = cpus or 1
    try:
        texts = loadavg if loadavg is not None else _loadavg_readings()
    except OSError:
        return cpus
    running = min(int(text.split()[3].split("/")[0]) for text in texts)
    return max(1, cpus - max(0, running - 1))


def _loadavg_readings(count: int = 5, gap_s: float = 0.002) -> tuple[str, ...]:
    texts = []
    for k in range(count):
        if k:
            time.sleep(gap_s)
        with open("/proc/loadavg") as f:
            texts.append(f.read())
    return tuple(texts)


def fused_kernels(kernels: str, modulus: torch.Tensor) -> bool:
    """Whether ``kernels`` (see ``run_phasing``) means the fused numba kernels here."""
    if kernels not in ("auto", "numba", "torch"):
        raise ValueError(f"kernels must be 'auto', 'numba' or 'torch', got {kernels!r}")
    on_cpu = modulus.device.type == "cpu"
    if kernels == "numba" and not (on_cpu and cpu_kernels.available()):
        raise ValueError("kernels='numba' needs a CPU tensor and numba installed")
    return kernels == "numba" or (kernels == "auto" and on_cpu and cpu_kernels.available())


def _run(inputs, algorithms, shrinkwrap, wanted, every, fused) -> PhasingResult:
    modulus, start, support, mask, upper_bound, beta = inputs
    st = _State.prepare(modulus, start, support, mask, upper_bound, beta, shrinkwrap, fused)
    return _iterate(st, algorithms, shrinkwrap, wanted, every)


def _run_in_chunks(inputs, rest: tuple, chunk: int | None) -> PhasingResult:
    """``_run`` one cache-sized chunk of the batch after another (``run_phasing``'s
    ``chunk``; ``batch_for`` by default): a whole batch whose working set leaves the
    cache runs slower (``benchmarks/phasing_chunks.py``). On a GPU the batch runs whole."""
    modulus = inputs[0]
    batch = modulus.shape[0]
    if modulus.device.type != "cpu":
        return _run(inputs, *rest)
    if chunk is None:
        chunk = batch_for(modulus.shape[-1], threads=torch.get_num_threads())
    if not chunk or batch <= chunk:
        return _run(inputs, *rest)
    cuts = range(0, batch, chunk)
    return _concat([_run(_slice(inputs, batch, a, min(a + chunk, batch)), *rest) for a in cuts])


def _slice(inputs, batch: int, a: int, b: int) -> tuple:
    """Patterns a:b of every per-pattern input (shared (P, P) ones and floats stay)."""

    def cut(v):
        if v is None or isinstance(v, (int, float)):
            return v
        t = torch.as_tensor(v)
        return t[a:b] if t.ndim >= 1 and t.shape[0] == batch and t.ndim != 2 else t

    return tuple(cut(v) for v in inputs)


def _concat(parts: list) -> PhasingResult:
    fields = {f.name: [getattr(p, f.name) for p in parts] for f in dataclasses.fields(parts[0])}
    snaps = {k: torch.cat([p.snapshots[k] for p in parts]) for k in parts[0].snapshots}
    return PhasingResult(
        **{k: torch.cat(v) for k, v in fields.items() if k != "snapshots"}, snapshots=snaps
    )


def sampled_iterations(algorithms, every: int) -> list[bool]:
    """Which iterations compute chi^2: every ``every``-th, and each iterate ending an ER run.

    The iterate entering iteration k is the last of an ER run when step k-1 was ER and
    step k is not; ER lowers the error at every step, so that is the run's best candidate.
    """
    out = []
    for k, name in enumerate(algorithms):
        ends_er_run = k > 0 and algorithms[k - 1] == "ER" and name != "ER"
        out.append(k % every == 0 or ends_er_run)
    return out


def _iterate(st: _State, algorithms, shrinkwrap, wanted: set, every: int) -> PhasingResult:
    names = set(algorithms)
    record = sampled_iterations(algorithms, every)
    coef = st.coefficients(names)
    # one row per iteration, written in place (a row is contiguous; a column is not)
    curve = torch.full((len(algorithms), st.batch), math.nan, device=st.device, dtype=st.real)
    best = _Best(st.x, torch.full((st.batch,), math.inf, device=st.device, dtype=st.real))
    x, kept, first = st.x, {}, None
    for k, name in enumerate(algorithms):
        updated = shrinkwrap is not None and shrinkwrap.due(k)
        if updated:
            st.update_support(x, shrinkwrap)
            coef = st.coefficients(names)
            best.reset()
        if k in wanted:
            kept[k] = _shift(torch.where(st.s, x, 0))
        y, err = st.fourier(x, with_chi2=record[k], out=curve[k] if record[k] else None)
        if err is not None:
            # x satisfies the support in force (after ER; the start), unless that just
            # changed: then it satisfies the old one only
            if (k == 0 or algorithms[k - 1] == "ER") and not updated:
                best.offer(x, err)
            if k == 0:
                first = (x, err)
        x = st.update(coef[name], x, y)

    x = torch.where(st.s, x, 0)
    final = chi2_of(magnitude(torch.fft.fft2(x, norm="ortho")), st.m, st.w, norm=st.norm)
    best.offer(x, final, ties=True)
    if first is not None:  # the start, in its own support: never answer worse than it
        best.offer(*first)
    if len(algorithms) in wanted:
        kept[len(algorithms)] = _shift(x)
    return PhasingResult(
        obj=_shift(x),
        best_obj=_shift(best.x),
        support=_shift(st.s),
        chi2=curve.T.float().contiguous(),
        final_chi2=final.float(),
        best_chi2=best.chi2.float(),
        collapsed=st.collapsed,
        snapshots=kept,
    )


def _update(coefficients, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """``a x + c y`` written into ``y`` (the inverse FFT's fresh output); ``x`` is not
    touched, so a reference to it (the kept best) stays valid."""
    a, c = coefficients
    y.mul_(c)
    return y if a is None else y.addcmul_(x, a)


@dataclasses.dataclass
class _Best:
    """The support-consistent iterate of least chi^2 so far, per pattern."""

    x: torch.Tensor
    chi2: torch.Tensor

    def reset(self) -> None:
        """Forget the candidates: the support changed, and chi^2 across supports is no
        fair comparison (the next offer is kept whatever its chi^2)."""
        self.chi2 = torch.full_like(self.chi2, math.inf)

    def offer(self, x: torch.Tensor, err: torch.Tensor, ties: bool = False) -> None:
        better = err <= self.chi2 if ties else err < self.chi2
        self.chi2 = torch.where(better, err, self.chi2)
        if x.device.type == "cpu":
            # reading a CPU bool waits for nothing; under ER usually every pattern
            # improves, and then the iterate is kept by reference (it is never written)
            if bool(better.all()):
                self.x = x
                return
            if not bool(better.any()):
                return
        self.x = torch.where(better[:, None, None], x, self.x)


@contextlib.contextmanager
def engine_threads(threads: int | None):
    """Run the block with ``threads`` torch CPU threads (None: leave them), then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# Bytes per pixel the loop touches on every iteration: x, spectrum, y and the two
# complex coefficients (8 bytes each at complex64), the modulus, |F| and a scratch (4
# each) and the squares (8); the kept best is touched only at ER steps.
_BYTES_PER_PIXEL = 5 * 8 + 3 * 4 + 8
_MIN_PIXELS = 2**17


@functools.cache  # read once: every CPU run_phasing call asks
def cache_bytes_per_core(default: int = 2 * 2**20) -> int:
    """The per-core (L2) cache size from Linux sysfs, else ``default`` (2 MiB)."""
    for index in range(4):
        base = Path(f"/sys/devices/system/cpu/cpu0/cache/index{index}")
        try:
            if int((base / "level").read_text()) == 2:
                text = (base / "size").read_text().strip()
                return int(text.rstrip("KM")) * {"K": 2**10, "M": 2**20}.get(text[-1:], 1)
        except (OSError, ValueError):
            continue
    return default


def batch_for(
    pattern_size: int,
    threads: int | None = None,
    device: str | torch.device = "cpu",
    cache_bytes: int | None = None,
) -> int:
    """A batch size for ``run_phasing`` at ``pattern_size``, from the cache (CPU) or memory.

    On CPU the loop is bound by memory traffic once its working set leaves the per-core
    cache, so the batch is as many patterns as fit in ``threads`` per-core caches, but
    never fewer than ``_MIN_PIXELS`` pixels per thread (each of the ~12 ops per iteration
    costs a fixed dispatch, and torch splits an op over threads only above 32768
    elements) nor fewer than one pattern per thread. ``run_phasing`` runs a larger CPU
    batch in chunks of this size. Measured at 64 x 64 on 2 cores (2 MiB L2 each), 1,024
    patterns: on 1 thread chunks of 32 ran 3x faster than the batch whole; on 2 threads
    chunks of 64 to 256 ran 2.8x faster than whole, and 32 varied most. On a GPU: what
    fits in a quarter of the free memory, at most 16384 (throughput flattens well before).
    """
    per_pattern = _BYTES_PER_PIXEL * pattern_size * pattern_size
    if torch.device(device).type == "cuda":
        free, _total = torch.cuda.mem_get_info(torch.device(device))
        return max(1, min(16384, free // (4 * per_pattern)))
    threads = threads or torch.get_num_threads()
    cache = cache_bytes or cache_bytes_per_core()
    floor = -(-_MIN_PIXELS * threads // (pattern_size * pattern_size))
    return max(threads, floor, (cache * threads) // per_pattern)


def _per_pattern(value, batch: int, device, dtype) -> torch.Tensor:
    """A scalar or a length-B sequence/tensor -> (B, 1, 1) tensor."""
    t = torch.as_tensor(value, device=device, dtype=dtype)
    if t.ndim == 0:
        t = t.expand(batch)
    return t.reshape(batch, 1, 1)


def _shift(t: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(t, dim=_DIMS2)


def _unshift(t: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifftshift(t, dim=_DIMS2)


def _complex_of(real: torch.dtype) -> torch.dtype:
    return torch.complex64 if real == torch.float32 else torch.complex128


@dataclasses.dataclass
class _State:
    """The loop's inputs (unshifted), its buffers, and the support it updates: ``m``
    modulus, ``w`` mask (None: all measured), ``s`` support, ``ub`` upper bound, ``b``
    beta (B, 1, 1), ``norm`` measured sum |F|^2 (B,), ``x`` the scaled start; ``mag``,
    ``tmp`` and ``squares`` are the Fourier step's real buffers; ``fused``, when set, runs
    the two pixel-wise steps in ``cpu_kernels`` instead of torch ops."""

    m: torch.Tensor
    w: torch.Tensor | None
    unmeasured: torch.Tensor | None
    s: torch.Tensor
    ub: torch.Tensor | None
    b: torch.Tensor
    norm: torch.Tensor
    x: torch.Tensor
    transfer: torch.Tensor | None
    collapsed: torch.Tensor
    mag: torch.Tensor
    tmp: torch.Tensor
    squares: torch.Tensor
    fused: cpu_kernels.FusedSteps | None = None

    batch = property(lambda self: self.m.shape[0])
    device = property(lambda self: self.m.device)
    real = property(lambda self: self.m.dtype)

    @classmethod
    def prepare(
        cls, modulus, start, support, mask, upper_bound, beta, shrinkwrap, fused=False
    ) -> _State:
        batch, size, device = modulus.shape[0], modulus.shape[-1], modulus.device
        real = modulus.dtype if modulus.dtype in (torch.float32, torch.float64) else torch.float32
        m = _unshift(modulus.to(real)).contiguous()
        s = _unshift(support.to(device=device, dtype=torch.bool).expand(batch, size, size)).clone()
        w = None if mask is None else _unshift(mask.to(device=device, dtype=torch.bool))
        ub = None if upper_bound is None else _unshift(upper_bound.to(device, torch.bool))
        m_measured = m if w is None else m * w
        norm = (m_measured * m_measured).sum(_DIMS2).clamp_min(_EPS)
        x = torch.where(s, _unshift(start.to(device=device, dtype=_complex_of(real))), 0)
        energy = (x.abs() ** 2).sum(_DIMS2, keepdim=True)
        x = x * torch.sqrt(norm[:, None, None] / energy.clamp_min(_EPS))  # measured energy only
        transfer = None
        if shrinkwrap is not None:
            transfer = gaussian_transfer(size, shrinkwrap.sigma, device=device, dtype=real)
            if ub is None:
                ub = torch.ones(size, size, dtype=torch.bool, device=device)
        collapsed = torch.zeros(batch, dtype=torch.bool, device=device)
        b = _per_pattern(beta, batch, device, real)
        unmeasured = None if w is None else ~w
        mag, tmp = torch.empty_like(m), torch.empty_like(m)
        squares = torch.empty(*m.shape, 2, device=device, dtype=real)
        steps = cpu_kernels.FusedSteps.of(m, norm, w) if fused else None
        buffers = (mag, tmp, squares, steps)
        return cls(m, w, unmeasured, s, ub, b, norm, x, transfer, collapsed, *buffers)

    def coefficients(self, names) -> dict:
        """Per algorithm, the update's coefficients for the support in force: complex
        ``(a, c)`` tensors, or with ``fused`` ``cpu_kernels``' per-pattern
        (a_out, a_in, c_out, c_in) and the support as bytes."""
        if self.fused is not None:
            s = self.fused.support_bytes(self.s)
            return {n: self.fused.coefficients(COEFFICIENTS[n], s, self.b) for n in names}
        cplx = _complex_of(self.real)
        out = {}
        for name in names:
            a, c = COEFFICIENTS[name](self.s, self.b, self.real)
            out[name] = (None if a is None else a.to(cplx), c.to(cplx))
        return out

    def update(self, coefficients, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The next iterate ``a x + c y``, written into ``y``; ``x`` is not touched."""
        if self.fused is None:
            return _update(coefficients, x, y)
        return self.fused.update_(coefficients, x, y)

    def fourier(self, x: torch.Tensor, with_chi2: bool, out: torch.Tensor | None = None):
        """``(P_M x, chi^2 of x or None)``: the masked modulus projection of
        ``cdiflow.physics.farfield.project_modulus`` and eq. 5, in the state's buffers;
        chi^2 goes into ``out`` (B,) when given."""
        if self.fused is not None:  # chi^2 comes with the pass at next to no cost
            # neither FFT scales: the kernel's pass applies both normalisations; FFTW
            # where it is the faster (cpu_fft), torch's FFT elsewhere
            spectrum = cpu_fft.fft2(x)
            err = out if out is not None else torch.empty(self.batch, dtype=self.real)
            self.fused.project_(spectrum, err.numpy())
            return cpu_fft.ifft2_(spectrum), err if with_chi2 else None
        spectrum = torch.fft.fft2(x, norm="ortho")
        mag = self._magnitude(spectrum)
        err = None
        if with_chi2:
            diff = torch.sub(mag, self.m, out=self.tmp)
            if self.w is not None:
                diff.mul_(self.w)
            err = torch.linalg.vecdot(diff, diff, dim=-1).sum(-1) / self.norm
            if out is not None:
                err = out.copy_(err)
        ratio = torch.clamp_min(mag, RATIO_EPS, out=self.tmp)
        torch.div(self.m, ratio, out=ratio)
        if self.unmeasured is not None:
            ratio.masked_fill_(self.unmeasured, 1.0)
        return torch.fft.ifft2(spectrum.mul_(ratio), norm="ortho"), err

    def _magnitude(self, spectrum: torch.Tensor) -> torch.Tensor:
        """|spectrum| into ``self.mag``, as ``cdiflow.physics.farfield.magnitude`` computes
        it: on CPU squaring the contiguous real view first and adding its halves is faster
        than squaring the strided real and imaginary parts."""
        if spectrum.device.type != "cpu":
            return torch.abs(spectrum, out=self.mag)
        sq = torch.mul(torch.view_as_real(spectrum), torch.view_as_real(spectrum), out=self.squares)
        return torch.add(sq[..., 0], sq[..., 1], out=self.mag).sqrt_()

    def update_support(self, x: torch.Tensor, shrinkwrap: ShrinkWrap) -> None:
        """Shrink-wrap; a pattern whose new support collapses keeps its old one."""
        new = shrink_wrap(
            x, self.ub, threshold=shrinkwrap.threshold, transfer=self.transfer,
            fused=self.fused is not None,
        )  # fmt: skip
        self.collapsed |= new.flatten(1).sum(1) < shrinkwrap.min_pixels
        if self.device.type == "cpu" and not bool(self.collapsed.any()):
            self.s = new  # the usual case; reading a CPU bool waits for nothing
            return
        self.s = torch.where(self.collapsed[:, None, None], self.s, new)
