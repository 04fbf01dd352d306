"""The rows of the README's benchmark table: one builder per row, from its JSON.

Each builder takes the loaded JSON of the files its ``ROWS`` entry names and returns the
row's "what", "measured" and "target" cells; ``readme_benchmarks.py`` adds the machine
and the source. Every figure in the "what" and "measured" cells comes from that JSON.
Typed here, because they are not measurements: the targets (requirements), the paper's
and the issue's prototype figures, and which script writes a file not named after it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from phasing_rows import MODES as phasing_modes  # lower case: not a typed constant
from phasing_rows import fastest

# Requirements and reference figures: typed, not measured.
PAPER_CHI2 = (0.019, 0.005, 0.029)  # modulus / amplitude / phase, 12 h on a P100
PAPER_NNS_S = 30  # the paper's NNS, seconds per query
PAPER_SCAN_CHI2 = 0.7  # the paper's BaTiO3 crystal, CNN alone
PROTOTYPE_DIFFRACTION_RATIO = 90  # the issue's prototype
PROTOTYPE_NAIVE_MS = 160  # the issue's prototype of the plain reading, ms per pattern
SYNTHESIS_RATIO, GENERATION_RATE, SCALING, MEMORY_BYTES = 100, 1000, 1.8, 2e9
INFERENCE_RATE, INFERENCE_SHARE, GPU_INFERENCE_RATE = 300, 0.5, 200_000
GPU_TRAIN_MINUTES, PHASING_RATE, PHASING_SPEEDUP, GPU_PHASING_RATE = 15, 30, 10, 10_000
NNS_MS, SCAN_CHI2, IO_BOUND = 20, 1.5e-3, 0.7
CHI2_VS_COHERE = 1.05  # the engine issue's "median chi^2 no worse than 1.05x cohere's"
# the inference row reports the width the project ships, as its card says
SHIPPED_CARD = Path(__file__).resolve().parents[1] / "platform/cdiflow/pretrained/cnn.json"
# Files whose name is not their script's: the script that writes them.
SCRIPT = {
    "phasing_1thread.json": "phasing.py",
    "phasing_2threads_loaded.json": "phasing.py",
    "phasing_quality_1thread.json": "phasing.py",
    "cpu2_phasing_h200host.json": "gpu_phasing.py",
    "nns_shared_box_1thread.json": "nns.py",
    "gpu_train_h200.json": "gpu_train.py",
    "cpu_train_12min.json": "gpu_train.py",
    "scan54_box32.json": "scan54.py",
    "beamtime_throughput_nofigures.json": "beamtime_throughput.py",
}


def _met(ok: bool) -> str:
    return "met" if ok else "**not met**"


def _span(values, fmt: str) -> str:
    lo, hi = format(min(values), fmt), format(max(values), fmt)
    return lo if lo == hi else f"{lo} to {hi}" if "e" in fmt else f"{lo}-{hi}"


def _plural(n, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def diffraction(g):
    d = g["diffraction"]
    return (
        "diffraction step: projection + 2D FFT vs 3D FFT + slice, same object",
        f"{d['fast_ms']:.3f} ms vs {d['literal_ms']:.2f} ms: **{d['ratio']:.0f}x** CPU time "
        f"({d['wall_ratio']:.0f}x wall); equal to {d['max_relative_difference']:.1e}",
        f"(prototype: {PROTOTYPE_DIFFRACTION_RATIO}x)",
    )


def synthesis(g):
    e, n, p = g["end_to_end"], g["config"]["object_size"], g["config"]["pattern_size"]
    return (
        "synthesis per pattern: fast generator vs a plain reading of the paper (3D grid, "
        "interpolated rotation, 3D smoothing, 3D FFT, slice)",
        f"{e['fast_ms_per_pattern']:.2f} ms vs {e['naive_ms_per_pattern']:.1f} ms on a "
        f"{n} x {n} x {n} grid: **{e['ratio']:.1f}x**; vs "
        f"{e['naive_pattern_grid_ms_per_pattern']:.1f} ms on the {p} x {p} x {p} grid: "
        f"**{e['pattern_grid_ratio']:.0f}x**",
        f">= {SYNTHESIS_RATIO}x: {_met(e['ratio'] >= SYNTHESIS_RATIO)}",
    )


def _by_workers(s) -> dict:
    runs: dict = {}
    for run in s["runs"]:
        runs.setdefault(run["workers"], []).append(run)
    return runs


def ray_generation(s):
    runs = _by_workers(s)
    one, most = min(runs), max(runs)
    rate = {w: [r["patterns_per_s"] for r in runs[w]] for w in (one, most)}
    cpu = _span([r["cpu_ms_per_pattern"] for r in s["runs"]], ".2f")
    return (
        f"Ray Data generation, whole pipeline ({s['config']['patterns']:,} patterns)",
        f"{cpu} CPU-ms/pattern; **{_span(rate[most], ',.0f')} patterns/s** with {most} "
        f"workers, {_span(rate[one], ',.0f')} with {one}",
        f">= {GENERATION_RATE:,} patterns/s: {_met(min(rate[most]) >= GENERATION_RATE)}",
    )


def scaling(s):
    runs = _by_workers(s)
    one, most = min(runs), max(runs)
    speed = [r["speedup"] for r in runs[most]]
    efficiency = _span([r["cpu_efficiency"] for r in runs[most]], ".2f")
    return (
        f"generation, {one} -> {most} workers",
        f"**{_span(speed, '.2f')}x** wall at {efficiency} CPU efficiency (Ray's own "
        "processes share the cores)",
        f">= {SCALING}x: {_met(min(speed) >= SCALING)}",
    )


def memory(t):
    big = t["ray"]["large_run"]
    pss, rss = big["peak_pss_sum_mb"], big["peak_rss_sum_mb"]
    fits = {kind: "met" if mib * 2**20 < MEMORY_BYTES else "**not met**" for kind, mib in
            (("pss", pss), ("rss", rss))}  # fmt: skip
    return (
        f"generation memory: {big['patterns']:,}-pattern Ray run",
        f"peak PSS summed over {big['peak_processes']} processes {pss:,.0f} MiB, RSS summed "
        f"{rss:,.0f} MiB, largest process {big['peak_single_process_rss_mb']:,.0f} MiB; "
        f"{big['bytes_per_pattern'] / 1e3:.1f} kB/pattern, {big['patterns_per_s']:,.0f} "
        "patterns/s",
        f"< {MEMORY_BYTES / 1e9:.0f} GB peak: {fits['pss']} as PSS, {fits['rss']} as summed RSS",
    )


def shipped_width() -> int:
    """The base width of the shipped model, as its card names it."""
    return json.loads(SHIPPED_CARD.read_text())["model_config"]["base_width"]


def _inference_row(c) -> dict:
    """The shipped model's row of ``cnn_inference.json`` (older files: its width's row)."""
    return c.get("shipped") or next(r for r in c["models"] if r["base_width"] == shipped_width())


def other_batches(row: dict) -> str:
    """The '; at batch B: R patterns/s, S%' of an inference row's other ``by_batch`` rows."""
    return "".join(
        f"; at batch {r['batch']}: {r['patterns_per_s']:.0f} patterns/s, "
        f"{r['fraction_of_matmul']:.0%}"
        for r in row.get("by_batch", [])[1:]
    )


def cnn_inference(c):
    m = _inference_row(c)
    ok = m["patterns_per_s"] >= INFERENCE_RATE and m["fraction_of_matmul"] >= INFERENCE_SHARE
    matmul = m["matmul_gflops"]  # what the share used: the best of the turns
    what = "the shipped model" if "weights" in m else "the shipped width"
    also = other_batches(m)
    return (
        f"CNN inference, width {m['base_width']} ({m['gflop_per_pattern']:.3f} GFLOP, "
        f"{m['parameters'] / 1e6:.2f} M parameters), batch {c['batch']}, BN folded, "
        "channels_last",
        f"**{m['patterns_per_s']:.0f} patterns/s**, {m['gflops_achieved']:.0f} GFLOP/s = "
        f"**{m['fraction_of_matmul']:.0%}** of the {matmul:.0f} GFLOP/s fp32 matmul measured "
        f"beside it, {what}{also}",
        f">= {INFERENCE_RATE}/s and >= {INFERENCE_SHARE:.0%}: {_met(ok)}",
    )


def gpu_inference(g):
    speeds = g["inference_patterns_per_s"]
    return (
        f"CNN inference, width {g['args']['width']}, batch {g['args']['infer_batch']:,}",
        ", ".join(f"**{v:,.0f} patterns/s** {k}" for k, v in speeds.items()),
        f">= {GPU_INFERENCE_RATE:,}/s: "
        + ", ".join(f"{_met(v >= GPU_INFERENCE_RATE)} ({k})" for k, v in speeds.items()),
    )


def _layout_clause(t) -> str:
    """How much the channels_last layout gained over the default one (older runs: none)."""
    ratio = t.get("ratio_channels_last_vs_contiguous_1_thread")
    if ratio is None:
        return ""
    return f"; channels_last layout {ratio:.2f}x the default (1 thread, in turns)"


def train_throughput(t):
    pure = [
        f"{v:.0f} ({_plural(int(k.split('_')[0]), 'thread')})"
        for k, v in t["pure_torch_samples_per_s"].items()
    ]
    ray = [f"{r['samples_per_s']:.0f} ({_plural(r['workers'], 'worker')})" for r in t["ray_train"]]
    return (
        f"training throughput, width {t['model']['base_width']}, batch "
        f"{t['batch_size_per_worker']} per worker",
        f"pure PyTorch {', '.join(pure)} samples/s; Ray Train {', '.join(ray)}" + _layout_clause(t),
        "-",
    )


def _chi2s(t: dict, prefix: str = "chi2_") -> str:
    return " / ".join(f"{t[prefix + k]:.3f}" for k in ("modulus", "amplitude", "phase"))


def gpu_training(g):
    a, v, reached = g["args"], g["final_val"], g["time_to_target_s"]
    ok = reached is not None and reached <= 60 * GPU_TRAIN_MINUTES
    return (
        f"GPU training, width {a['width']}, {a['budget_s']:.0f} s budget, data generated on "
        f"the fly ({a['workers']} generator workers)",
        f"val modulus chi^2 {v['val_chi2_modulus']:.4f} at {g['train_seconds']:.0f} s (test "
        f"{_chi2s(g['test'])} modulus / amplitude / phase), {v['train_patterns_per_s']:,.0f} "
        "samples/s",
        f"paper's {PAPER_CHI2[0]} within {GPU_TRAIN_MINUTES} min: {_met(ok)}",
    )


def cpu_model(c):
    a, t = c["args"], c["test"]
    return (
        f"CPU training from scratch, {a['budget_s'] / 60:.0f} min (the shipped model trained "
        "longer): `benchmarks/gpu_train.py --device cpu --budget-s "
        f"{a['budget_s']:.0f}`"
        f" (width {a['width']}, AdamW + one-cycle, {a['initial_patterns']:,} patterns, "
        f"{c['final_val']['steps']:,} steps of {a['batch_size']})",
        f"held-out test chi^2 **{_chi2s(t)}** modulus / amplitude / phase (twin-aware "
        f"{t['chi2_amplitude_twin_aware']:.3f} / {t['chi2_phase_twin_aware']:.3f} for amplitude"
        f" / phase) after {c['train_seconds'] / 60:.0f} min",
        f"paper {' / '.join(map(str, PAPER_CHI2))} (12 h on a P100)",
    )


def phasing_vs_cohere(p):
    best = fastest(p["ours"])
    sub, cohere = p["ours_on_cohere_subset"], p["cohere"]
    speed, chi2 = p["speed_ratio_best_batch_vs_cohere"], p[CHI2_RATIO]
    return (
        f"phasing vs cohere-core, `{p['schedule']}` + shrink-wrap, same {cohere['patterns']} "
        f"patterns, start and schedule: {_plural(p['torch_threads'], 'torch thread')}"
        f"{_crowded(p)}",
        f"ours **{best['patterns_per_s']:.3g} patterns/s** (batch {best['batch']}; "
        f"{sub['patterns_per_s']:.3g} on the {sub['patterns']} cohere patterns at batch "
        f"{sub['batch']}) vs cohere-core {cohere['patterns_per_s']:.3g}: **{speed:.2g}x**; "
        f"median final chi^2 {sub['final_chi2_median']:.1e} vs {cohere['final_chi2_median']:.1e}",
        f">= {PHASING_RATE}/s: {_met(best['patterns_per_s'] >= PHASING_RATE)}; "
        f">= {PHASING_SPEEDUP}x cohere at equal or better chi^2: chi^2 {_met(chi2 <= 1)}, speed "
        f"{_met(speed >= PHASING_SPEEDUP)}",
    )


CHI2_RATIO = "chi2_median_ratio_ours_vs_cohere_same_patterns"


def phasing_quality(p):
    q = p["sizes"][0]["chi2_paired_vs_cohere"]
    low, high = q["median_ratio_ci95"]
    return (
        f"phasing quality vs cohere-core, `{p['schedule']}` + shrink-wrap, "
        f"{q['patterns']} patterns of {p['sizes'][0]['size']} x {p['sizes'][0]['size']}, each "
        "with the same start in both engines",
        f"median final chi^2 ratio ours / cohere **{q['median_ratio']:.2f}** (bootstrap 95% "
        f"{low:.2f}-{high:.2f}); per pattern: median ratio {q['median_per_pattern_ratio']:.2f},"
        f" ours not worse on {q['fraction_ours_not_worse']:.0%}",
        f"<= {CHI2_VS_COHERE}x: {_met(q['median_ratio'] <= CHI2_VS_COHERE)}",
    )


def _crowded(p) -> str:
    """Whether the run shared its cores: its own busy loop, or a load average above the
    core count."""
    load, cores = p["load_average_before"][0], p["cpu_count"]
    if p.get("beside_busy_process"):
        return ", beside a CPU-bound busy loop"
    return f", beside other work (load {load:.0f} on {cores} cores)" if load > cores else ""


def _join(values, fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in values)


def phasing_batches(p):
    rows, bound = p["ours"], p["fft_only_patterns_per_s"]
    return (
        f"phasing, same schedule, batch {_join([r['batch'] for r in rows], 'd')}",
        f"{_join([r['patterns_per_s'] for r in rows], '.3g')} patterns/s (the FFT pair alone: "
        f"{_join([bound[str(r['batch'])] for r in rows], '.3g')})",
        "-",
    )


def phasing_chunks(c):
    args, modes = c["args"], c["modes"].values()
    return (
        f"phasing, {args['patterns']:,} patterns in one call, `{args['schedule']}`: in "
        "cache-sized chunks (`batch_for`) vs the batch whole",
        "; ".join(
            f"{m['torch_threads']} torch thread(s) x {m['workers']} worker(s): "
            f"{m['median_patterns_per_s']['chunked']:.0f} vs "
            f"{m['median_patterns_per_s']['whole']:.0f} patterns/s "
            f"(**{m['speedup_chunked_vs_whole']:.2f}x**, chunks of {m['chunk']})"
            for m in modes
        ),
        "-",
    )


def phasing_rows(g, what: str, target: int):
    rows = g["rows"]
    rate = [r["patterns_per_s"] for r in rows]
    bound = [r["fft_only_pattern_iterations_per_s"] / r["iterations"] for r in rows]
    return (
        f"{what}, `{g['schedule']}`, batch {_join([r['batch'] for r in rows], ',')}",
        f"{_join(rate, ',.0f')} patterns/s (FFT pair alone: {_join(bound, ',.0f')})",
        f">= {target:,}/s: {_met(max(rate) >= target)}" if target else "-",
    )


def nns(n):
    rows = {r["binning"]: r for r in n["rows"]}
    coarse, b = rows[max(rows)], max(rows)
    full = f"; {rows[1]['ms_per_query']:.1f} ms unbinned" if 1 in rows and b != 1 else ""
    return (
        f"nearest-neighbour search, {coarse['references']:,} references, "
        f"{coarse['queries']} queries",
        f"**{coarse['ms_per_query']:.1f} ms/query** ({b} x {b}-binned correlation + "
        f"full-resolution re-rank of the top {n['k']}){full}",
        f"<= {NNS_MS} ms: {_met(coarse['ms_per_query'] <= NNS_MS)} (paper ~{PAPER_NNS_S} s)",
    )


def _scan(s) -> str:
    number = re.search(r"(\d+)$", s["scan"]).group(1)
    return f"real scan {int(number)}"


def scan54_cnn(s):
    model = s["model"].get("path", s["model"].get("ref", "?")).split("/")[-1]
    return (
        f"{_scan(s)}: CNN alone (`{model}`)",
        f"chi^2 {s['cnn_chi2']:.2f}",
        f"- (paper's BaTiO3: {PAPER_SCAN_CHI2})",
    )


def scan54_refined(s, box):
    rnd, cnn, jitter = (s["refined"][k] for k in ("random-rectangle", "cnn", "cnn-jitter"))
    ends = [v["mean"] for v in box["refined"].values()]
    return (
        f"{_scan(s)}: refined, `{s['schedule']}`",
        f"CNN start {cnn['mean']:.1e}; random start {rnd['mean']:.1e} +- {rnd['std']:.1e} "
        f"({len(rnd['runs'])} seeds, {s['upper_bound']}-px upper bound); in a "
        f"{box['upper_bound']}-px box every start ends at {_span(ends, '.1e')} (means)",
        f"<= {SCAN_CHI2:.1e}: {_met(cnn['mean'] <= SCAN_CHI2)}; less spread than random: the "
        f"CNN start is one deterministic run, with {s['jitter_rad']} rad phase jitter std "
        f"{jitter['std']:.1e} vs {rnd['std']:.1e}: {_met(jitter['std'] < rnd['std'])}",
    )


def beamtime(b):
    stages = b["stage_fraction"].items()
    return (
        f"{b['scans']}-scan synthetic beamtime, {b['frames']} frames each, `{b['schedule']}`, "
        f"scan figures: {b.get('figures', 'all')}",
        f"{b['scans_per_s']:.2f} scans/s end to end; {b['job_vs_raw']:.1%} of the raw "
        "(page-cache) read rate; stage time "
        + ", ".join(f"{k.removeprefix('t_')} {v:.1%}" for k, v in stages),
        f"I/O-bound (>= {IO_BOUND:.0%}): {_met(b['job_vs_raw'] >= IO_BOUND)} on {b['cpus']} cores",
    )


PHASING_TARGET = f">= {PHASING_RATE}/s; >= {PHASING_SPEEDUP}x cohere at equal or better chi^2"
GPU_TARGET = f">= {GPU_PHASING_RATE:,}/s"
# (JSON files, label and target shown when a file is missing, builder)
ROWS = [
    (["generation.json"], "diffraction step", "-", diffraction),
    (["generation.json"], "synthesis per pattern", f">= {SYNTHESIS_RATIO}x", synthesis),
    (["generate_scaling.json"], "Ray Data generation", f">= {GENERATION_RATE:,}/s", ray_generation),
    (["generate_scaling.json"], "generation scaling", f">= {SCALING}x", scaling),
    (["generate_throughput.json"], "generation memory", f"< {MEMORY_BYTES / 1e9:.0f} GB", memory),
    (["cnn_inference.json"], "CNN inference (CPU)", f">= {INFERENCE_RATE}/s", cnn_inference),
    (["gpu_train_h200.json"], "CNN inference (GPU)", f">= {GPU_INFERENCE_RATE:,}/s", gpu_inference),
    (["train_throughput.json"], "training throughput", "-", train_throughput),
    (["gpu_train_h200.json"], "GPU training", f"{GPU_TRAIN_MINUTES} min", gpu_training),
    (["cpu_train_12min.json"], "CPU training from scratch", "-", cpu_model),
    *(([f], f"phasing vs cohere-core, {run}", PHASING_TARGET, phasing_vs_cohere)
      for f, run in phasing_modes),
    (["phasing_quality_1thread.json"], "phasing quality vs cohere-core",
     f"<= {CHI2_VS_COHERE}x", phasing_quality),
    (["phasing.json"], "phasing batch sizes", "-", phasing_batches),
    (["phasing_chunks.json"], "phasing, a large batch in chunks", "-", phasing_chunks),
    (["cpu2_phasing_h200host.json"], "phasing, H200 host's CPU", "-",
     lambda g: phasing_rows(g, "phasing on the H200 host's CPU", 0)),
    (["gpu_phasing.json"], "phasing on GPU", GPU_TARGET,
     lambda g: phasing_rows(g, "phasing on GPU", GPU_PHASING_RATE)),
    (["nns.json"], "nearest-neighbour search", f"<= {NNS_MS} ms", nns),
    (["nns_shared_box_1thread.json"], "nearest-neighbour search, 1 thread", f"<= {NNS_MS} ms", nns),
    (["scan54.json"], "real scan: CNN alone", "-", scan54_cnn),
    (["scan54.json", "scan54_box32.json"], "real scan: refined", f"<= {SCAN_CHI2}", scan54_refined),
    (["beamtime_throughput.json"], "synthetic beamtime", f">= {IO_BOUND:.0%}", beamtime),
    (["beamtime_throughput_nofigures.json"], "synthetic beamtime, no figures", "-", beamtime),
]  # fmt: skip
