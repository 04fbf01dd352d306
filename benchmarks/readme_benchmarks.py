"""The README's "## Benchmarks" section, built from ``benchmarks/results/*.json``.

``readme_tables.py`` writes ``section(load)`` between ``<!-- benchmarks:begin -->`` and
``<!-- benchmarks:end -->``: a caption, the table (rows from ``readme_rows.py``, plus the
machine, threads and load average each JSON records, and the file it came from; a row
whose JSON is missing reads "not measured"), and what stands behind the misses. ``load``
maps a results file name to its parsed JSON, or None when the file does not exist.
"""

from __future__ import annotations

import textwrap
from collections.abc import Callable

from readme_rows import (
    PHASING_SPEEDUP,
    PROTOTYPE_NAIVE_MS,
    ROWS,
    SCRIPT,
    SYNTHESIS_RATIO,
    _plural,
    _span,
)
from readme_rows_refine import ROWS_REFINE

Load = Callable[[str], "dict | None"]
# Files that record no host: commit 3ce56bf ran them on 2 pinned cores of the GPU machine.
HOST = {"nns.json": "H200 host's CPU", "cpu2_phasing_h200host.json": "H200 host's CPU"}
HEADER = ["| what | measured | target | machine (load) | from |", "| --- | --- | --- | --- | --- |"]


def _loads(d: dict) -> list[float]:
    """The 1-minute load averages a result records (before / after / during)."""
    keys = ("load_average", "loadavg", "load_before", "load_after")
    keys += tuple(f"{k}_{when}" for k in keys[:2] for when in ("before", "after"))
    scopes = [d, d.get("environment", {})]
    scopes += [d["machine"]] if isinstance(d.get("machine"), dict) else []
    return [s[k][0] for s in scopes for k in keys if isinstance(s.get(k), list)]


def _threads(d: dict):
    env = d.get("environment", {})
    return d.get("threads", d.get("torch_threads", env.get("torch_threads")))


def _cores(d: dict):
    machine = d.get("machine")
    if isinstance(machine, str):
        return machine
    cpus = d.get("cpu_count") or d.get("cpus") or d.get("environment", {}).get("cpu_count")
    cpus = cpus or (machine or {}).get("cpus")
    return f"{cpus} cores" if cpus else None


def machine(name: str, d: dict) -> str:
    """Where a result ran, as its JSON records it, and the load average it ran at."""
    device = d.get("device", "cpu")
    if not device.startswith("cpu"):
        parts = [device]
    else:
        parts = [HOST.get(name, "CPU"), device[5:-1] if device.startswith("cpu (") else _cores(d)]
        threads = _threads(d)
        parts.append(_plural(threads, "thread") if threads else None)
    loads = _loads(d)
    load = f"load {_span(loads, '.1f')}" if loads else "load not recorded"
    return f"{', '.join(p for p in parts if p)} ({load})"


def _source(names) -> str:
    return ", ".join(f"`{n}` (`{SCRIPT[n]}`)" if n in SCRIPT else f"`{n}`" for n in names)


def table(load: Load) -> list[str]:
    lines = list(HEADER)
    for names, label, target, build in ROWS + ROWS_REFINE:
        found = [load(n) for n in names]
        if any(d is None for d in found):
            cells = (label, "not measured", target, "-")
        else:
            place = "; ".join(machine(n, d) for n, d in zip(names, found, strict=True))
            cells = (*build(*found), place)
        lines.append(f"| {' | '.join(cells)} | {_source(names)} |")
    return lines


def caption(load: Load) -> str:
    gen, gpu = load("generation.json"), load("gpu_train_h200.json")
    cpu = ""
    if gen:
        env = gen["environment"]
        cpu = (
            f": {env['cpu_count']} cores, {env['machine']}, Python {env['python']}, torch "
            f"{env['torch']}, as `generation.json` records it"
        )
    gpu_text = f"one {gpu['device']} (torch {gpu['torch']})" if gpu else "one GPU"
    return (
        "Every row is built by `python benchmarks/readme_tables.py` from the JSON in its last "
        "column (`benchmarks/results/`, written by the scripts in `benchmarks/`, whose "
        "`--smoke` forms run in CI); a test fails when this table and the JSON disagree. "
        f'"CPU" is this project\'s development machine{cpu}. It was shared with other jobs, so '
        "every row gives the threads and one-minute load average its JSON records, and speed "
        f"claims are ratios measured in one run. GPU rows ran once on {gpu_text}; no H100 was "
        'measured. "H200 host\'s CPU" marks CPU rows run on that GPU machine (their JSON '
        "records no host); they and the GPU phasing row predate the engine changes of commit "
        "030434a, and the CPU rows the fused CPU kernels of commit 908404f "
        "(`docs/phasing.md`). Targets are requirements, typed in "
        "`benchmarks/readme_rows.py`."
    )


def _twin(c) -> str:
    t = c["test"] if c else None
    scores = ""
    if t:
        scores = (
            f" (the {c['train_seconds'] / 60:.0f}-minute CPU model: "
            f"{t['chi2_amplitude_twin_aware']:.3f} / {t['chi2_phase_twin_aware']:.3f} "
            f"twin-aware against {t['chi2_amplitude']:.3f} / {t['chi2_phase']:.3f})"
        )
    return (
        "- The twin (complex conjugate + point inversion) gives exactly the same diffraction "
        "pattern, so a network cannot tell an object from its twin; trained twin-blind it "
        "learns the average of the two, whose error on this generator is itself above the "
        "paper's amplitude / phase figures (`platform/cdiflow/losses.py`). `evaluate` also "
        f"reports twin-aware errors{scores}, and the loss has an opt-in twin-invariant form."
    )


def _plain_reading(g) -> str:
    e = g["end_to_end"]
    return (
        f"- The plain reading of the paper costs {e['naive_ms_per_pattern']:.1f} ms per "
        f"pattern here, not the {PROTOTYPE_NAIVE_MS} ms of the issue's prototype (the figure "
        f"the {SYNTHESIS_RATIO}x target was set against); against that figure the generator is "
        f"{PROTOTYPE_NAIVE_MS / e['fast_ms_per_pattern']:.0f}x faster."
    )


def _cohere(p, p1) -> str:
    best = max(p["ours"], key=lambda r: r["patterns_per_s"])
    bound = p["fft_only_patterns_per_s"][str(best["batch"])]
    rate = p["cohere"]["patterns_per_s"]
    loaded = ""
    if p1:
        loaded = (
            f" ({p1['cohere']['patterns_per_s']:.1f} at load "
            f"{p1['load_average_before'][0]:.0f}, `phasing_1thread.json`)"
        )
    needed = PHASING_SPEEDUP * rate
    share = f"{needed / bound:.0%} of" if needed <= bound else "above"
    return (
        f"- cohere-core ran at {rate:.1f} patterns/s at load {p['load_average_before'][0]:.1f}"
        f"{loaded}; {PHASING_SPEEDUP}x of that, {needed:.0f}/s, is {share} the "
        f"{bound:.0f} patterns/s the FFT pair alone allows at batch {best['batch']} in the same "
        f"run, and our engine runs at {best['patterns_per_s'] / bound:.0%} of that bound"
        f"{_against_baseline(p)}: {_what_is_left(p)} (`docs/phasing.md`)."
    )


def _against_baseline(p) -> str:
    """ ", 2.1x the engine of commit abc1234 (batch 32, same run)", when the run had one."""
    at64 = next((s for s in p.get("sizes", []) if s.get("size") == 64), {})
    ratios = at64.get("speed_ratio_vs_baseline") or {}
    if not ratios or not p.get("baseline_revision"):
        return ""
    batch = max(ratios, key=int)
    return (
        f", {ratios[batch]:.1f}x the engine of commit `{p['baseline_revision'][:7]}` "
        f"(batch {batch}, taking turns in the same run)"
    )


def _what_is_left(p) -> str:
    """Why the engine is not at its bound, for the kernels this run used."""
    if str(p.get("cpu_kernels", "")).startswith("numba"):
        return (
            "above the FFT pair are the fused projection and update (one numba pass each), "
            "the shrink-wrap blur every 10 iterations and the per-iteration dispatch"
        )
    return "the elementwise passes cost 3-4x the FFT pair, and fusing them needs a compiled kernel"


def _oversubscribed(p1, p2) -> str:
    rows = p2["ours"]
    openmp = max((r for r in rows if "threads" not in r), key=lambda r: r["patterns_per_s"])
    split = [r for r in rows if "threads" in r]
    one = max(p1["ours"], key=lambda r: r["patterns_per_s"])
    text = (
        f"- Beside a CPU-bound busy loop, torch's own two OpenMP threads ran at "
        f"{openmp['patterns_per_s']:.3g} patterns/s at batch {openmp['batch']}"
    )
    if split:
        best = max(split, key=lambda r: r["patterns_per_s"])
        text += (
            f", and `run_phasing(threads=2)`, two single-threaded workers on halves of the "
            f"batch, at {best['patterns_per_s']:.3g} at batch {best['batch']}"
        )
    return text + (
        f", against {one['patterns_per_s']:.3g} with one thread on the quiet machine "
        f"(load {p1['load_average_before'][0]:.0f}): OpenMP barriers wait on descheduled "
        "threads, so on shared nodes pass `threads` (or run one torch thread per worker)."
    )


def misses(load: Load) -> list[str]:
    p, p1, p2 = (load(n) for n in ("phasing.json", "phasing_1thread.json", PHASING_LOADED))
    gen = load("generation.json")
    lines = [_twin(load("cpu_train_12min.json"))]
    lines += [_plain_reading(gen)] if gen else []
    lines += [_cohere(p, p1)] if p else []
    lines += [_oversubscribed(p1, p2)] if p1 and p2 else []
    return ["What stands behind the misses:", *lines]


PHASING_LOADED = "phasing_2threads_loaded.json"


def section(load: Load) -> str:
    """The whole marked section: caption, table, and what stands behind the misses."""

    def wrap(text: str) -> str:
        indent = "  " if text.startswith("- ") else ""
        return textwrap.fill(text, 90, subsequent_indent=indent, break_on_hyphens=False)

    prose = [wrap(line) for line in misses(load)]
    return "\n".join([wrap(caption(load)), "", *table(load), "", *prose])
