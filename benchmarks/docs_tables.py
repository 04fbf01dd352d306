"""Build the measured tables of ``docs/`` from the benchmark JSON (never by hand).

Like ``readme_tables.py`` for the README: the text between ``<!-- NAME:begin -->`` and
``<!-- NAME:end -->`` in a page is replaced by what section NAME builds from
``benchmarks/results/``: ``phasing-modes`` in ``docs/phasing.md`` (one row per pattern
size of each ``benchmarks/phasing.py`` mode file) and ``phasing-chunks`` (one row per thread mode of
``benchmarks/phasing_chunks.py``); ``measured-rates`` (one row per stage,
each from its own file) and ``generation-scaling`` (one row per worker count of
``benchmarks/generate_scaling.py``) in ``docs/scaling.md``; ``phase-head`` in
``docs/training.md`` (one row per model of ``benchmarks/phase_head.py``).

    python benchmarks/docs_tables.py            # rewrite the sections
    python benchmarks/docs_tables.py --check    # exit 1 if a page is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from phasing_rows import MODES, fastest
from readme_benchmarks import machine
from readme_rows import shipped_width

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"

HEADER = [
    "| mode (file) | load | P | ours, one scan | ours, batched (batch) | FFT-only bound "
    "| share of bound | cohere-core | one scan / cohere | batched / cohere "
    "| chi^2 ours / cohere |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]


def _rate(row: dict) -> str:
    split = ", `threads`" if "threads" in row else ""
    return f"{row['patterns_per_s']:.3g} ({row['batch']}{split})"


def _size_row(label: str, size: dict) -> str:
    one, best = fastest(size["ours"], batch=1), fastest(size["ours"])
    bound = size["fft_only_patterns_per_s"][str(best["batch"])]
    cohere = size.get("cohere")
    if cohere:  # the ratios as the benchmark wrote them
        versus = (
            f"{cohere['patterns_per_s']:.3g} | {size['speed_ratio_single_scan_vs_cohere']:.2g}x"
            f" | {size['speed_ratio_best_batch_vs_cohere']:.2g}x | "
            f"{size['chi2_median_ratio_ours_vs_cohere_same_patterns']:.2f}"
        )
    else:
        versus = "- | - | - | -"
    return (
        f"| {label} | {size['size']} | {one['patterns_per_s']:.3g} | {_rate(best)} | "
        f"{bound:.3g} | {size['share_of_fft_bound_best_batch']:.0%} | {versus} |"
    )


def _machine(machine) -> str:
    if not isinstance(machine, dict):
        return str(machine)
    l2 = machine.get("l2_cache_bytes_per_core")
    cache = f", {l2 / 2**20:.0f} MiB L2 per core" if l2 else ""
    return f"{machine['cpu']} ({machine['cpu_count']} cores{cache}, torch {machine['torch']})"


def phasing_modes(load) -> str:
    """One row per size and mode, from the files ``load(name)`` returns (None: absent)."""
    lines = list(HEADER)
    modes = {file: load(file) for file, _ in MODES}
    for file, name in MODES:
        mode = modes[file]
        if mode is None:
            lines.append(f"| {name} (`{file}`): not measured yet | | | | | | | | | | |")
            continue
        load_avg = f"{mode['load_average_before'][0]:.1f}-{mode['load_average_after'][0]:.1f}"
        for k, size in enumerate(mode["sizes"]):
            label = f"{name} (`{file}`) | {load_avg}" if k == 0 else " | "
            lines.append(_size_row(label, size))
    first = next((m for m in modes.values() if m), None)
    if first:
        lines += [
            "",
            f"Measured on {_machine(first['machine'])} at commit `{first['git_sha'][:7]}`, "
            f"{first['date'][:10]}; patterns/s, the paper's {first['schedule']} with "
            "shrink-wrap; the bound is the FFT pair alone at the same batch and threads, in "
            "the same run.",
        ]
    return "\n".join(lines)


def phasing_chunks(load) -> str:
    """One row per thread mode of ``phasing_chunks.json``: a batch whole against chunked."""
    result = load("phasing_chunks.json")
    if result is None:
        return "`benchmarks/results/phasing_chunks.json`: not measured yet"
    lines = [
        "| mode | chunk | whole, patterns/s | chunked, patterns/s | chunked / whole | same chi^2 |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for name, mode in result["modes"].items():
        rates = mode["median_patterns_per_s"]
        lines.append(
            f"| {name} | {mode['chunk']} | {rates['whole']:.0f} | {rates['chunked']:.0f} | "
            f"{mode['speedup_chunked_vs_whole']:.2f}x | {'yes' if mode['same_chi2'] else 'no'} |"
        )
    args, before, after = result["args"], result["load_before"][0], result["load_after"][0]
    lines += [
        "",
        f"Measured on {result['machine']} at commit `{result['git_sha'][:7]}`, "
        f"{result['date'][:10]}, load {before:.1f}-{after:.1f}: {args['patterns']:,} "
        f"patterns of 64 x 64, `{args['schedule']}` with shrink-wrap, medians of "
        f"{args['rounds']} alternating runs in one process "
        "(`benchmarks/results/phasing_chunks.json`).",
    ]
    return "\n".join(lines)


SCALING_COLUMNS = (
    ("patterns/s", lambda run: f"{run['patterns_per_s']:,.0f}"),
    ("wall speedup", lambda run: f"{run['speedup']:.2f}"),
    ("CPU ms / pattern", lambda run: f"{run['cpu_ms_per_pattern']:.2f}"),
    ("CPU efficiency", lambda run: f"{run['cpu_efficiency']:.2f}"),
    ("cores the job got", lambda run: f"{run['cpu_s'] / run['wall_s']:.2f}"),
)
"""Columns of the generation-scaling table: each cell joins that worker count's runs."""


def generation_scaling(load) -> str:
    """One row per worker count of ``generate_scaling.json``, its runs in run order."""
    result = load("generate_scaling.json")
    if result is None:
        return "`benchmarks/results/generate_scaling.json`: not measured yet"
    names = " | ".join(name for name, _ in SCALING_COLUMNS)
    lines = [f"| workers | {names} |", "| --- " * (len(SCALING_COLUMNS) + 1) + "|"]
    for workers in sorted({run["workers"] for run in result["runs"]}):
        runs = [run for run in result["runs"] if run["workers"] == workers]
        cells = [" / ".join(cell(run) for run in runs) for _, cell in SCALING_COLUMNS]
        lines.append(f"| {workers} | " + " | ".join(cells) + " |")
    order = ", ".join(str(run["workers"]) for run in result["runs"])
    before, after = result["load_average_before"][0], result["load_average_after"][0]
    lines += [
        "",
        f"Measured on {result['machine']} at commit `{result['git_sha'][:7]}`, "
        f"{result['date'][:10]}, load {before:.1f}-{after:.1f}; runs in the order {order}, "
        f"{result['runs'][0]['patterns']:,} patterns each after a warm-up "
        "(`benchmarks/results/generate_scaling.json`). Cores the job got: CPU seconds of "
        "the whole process tree over wall seconds.",
    ]
    return "\n".join(lines)


def _generation_cpu(d):
    cpu = [run["cpu_ms_per_pattern"] for run in d["runs"]]
    per_core = 1000 / (sum(cpu) / len(cpu))
    return (
        "CPU per pattern, Ray pipeline (simulate + write Parquet), whole process tree",
        f"{min(cpu):.2f}-{max(cpu):.2f} ms, i.e. **~{per_core:,.0f} patterns/s per core**",
    )


def _generation_bytes(d):
    return "bytes on disk", f"{d['ray']['large_run']['bytes_per_pattern'] / 1e3:.1f} kB per pattern"


def _training_cpu(d):
    rate = d["pure_torch_samples_per_s"]
    ray_rates = " and ".join(
        f"{r['samples_per_s']:.0f} with {r['workers']} worker{'s' * (r['workers'] > 1)}"
        for r in d["ray_train"]
    )
    return (
        f"width {d['model']['base_width']} CNN, batch {d['batch_size_per_worker']}, fp32: the "
        f"pure loop; then Ray Train ({d['cpus_per_worker']} CPU per worker)",
        f"{rate['1_threads']:.0f} samples/s on 1 thread, {rate['2_threads']:.0f} on 2; Ray "
        f"Train {ray_rates}",
    )


def _training_gpu(d):
    return (
        f"width {d['args']['width']}, bf16, data generated on the fly",
        f"{d['final_val']['train_patterns_per_s']:,.0f} samples/s",
    )


def _inference_cpu(d):
    row = d.get("shipped") or next(m for m in d["models"] if m["base_width"] == shipped_width())
    return (
        f"width {row['base_width']}, BN folded, channels_last, batch {d['batch']}, "
        f"{d['threads']} thread",
        f"{row['patterns_per_s']:,.0f} patterns/s",
    )


def _inference_gpu(d):
    rate = d["inference_patterns_per_s"]
    return (
        f"width {d['args']['width']}, batch {d['args']['infer_batch']:,}",
        f"{rate['fp32']:,.0f} patterns/s fp32, {rate['bf16']:,.0f} bf16",
    )


def _refinement_cpu(d):
    best = fastest(d["ours"])
    return (
        f"600 iterations (`{d['schedule']}` + shrink-wrap), {d['torch_threads']} threads",
        f"{best['patterns_per_s']:.0f} patterns/s (batch {best['batch']})",
    )


def _refinement_gpu(d):
    rates = ", ".join(f"{r['patterns_per_s']:,.0f} at batch {r['batch']:,}" for r in d["rows"])
    return f"the same, one {d['device']}", f"{rates} patterns/s"


def _beamtime_read(d):
    scan = d.get("real_scan54") or d["synthetic"]  # the measured scan where it was at hand
    full, raw = scan["reader_plus_preprocess"], scan["raw_read"]
    shape = "x".join(map(str, scan["frame_shape"]))
    return (
        f"scan {scan['scan']} ({scan['frames']} frames of {shape}, {scan['bytes'] / 1e6:.1f} "
        "MB): read + dark/flat + preprocess, warm cache, 1 thread",
        f"{full['seconds']:.2f} s per scan = **{full['MB_per_s']:.0f} MB/s per core** (raw "
        f"TIFF read alone: {raw['MB_per_s']:.0f} MB/s)",
    )


def _nearest_neighbour(d):
    row = max(d["rows"], key=lambda r: r["binning"])
    return (
        f"{row['references']:,} references, {row['features']:,} features, {d['threads']} thread",
        f"{row['ms_per_query']:.1f} ms per query",
    )


RATES = (
    ("generation", "generate_scaling.json", _generation_cpu),
    ("generation", "generate_throughput.json", _generation_bytes),
    ("training, CPU", "train_throughput.json", _training_cpu),
    ("training, GPU", "gpu_train_h200.json", _training_gpu),
    ("inference, CPU", "cnn_inference.json", _inference_cpu),
    ("inference, GPU", "gpu_train_h200.json", _inference_gpu),
    ("refinement, CPU", "phasing.json", _refinement_cpu),
    ("refinement, GPU", "gpu_phasing.json", _refinement_gpu),
    ("beamtime read", "read_rate_34idc.json", _beamtime_read),
    ("nearest neighbour", "nns_shared_box_1thread.json", _nearest_neighbour),
)
"""The measured-rates table: stage, result file, ``result -> (what, rate)``."""


def measured_rates(load) -> str:
    """One row per stage, each from its own result file (a missing file says so)."""
    lines = ["| stage | what | rate | source |", "| --- | --- | --- | --- |"]
    for stage, name, row in RATES:
        result = load(name)
        if result is None:
            lines.append(f"| {stage} | `{name}`: not measured yet | | |")
            continue
        what, rate = row(result)
        lines.append(f"| {stage} | {what} | {rate} | `{name}`: {machine(name, result)} |")
    return "\n".join(lines)


PHASE_HEAD_COLUMNS = (
    ("modulus", lambda r: r["twin_aware"]["chi2_modulus"]),
    ("amplitude (twin-aware)", lambda r: r["twin_aware"]["chi2_amplitude_twin_aware"]),
    ("phase (twin-aware)", lambda r: r["phase_split"]["total"]),
    ("of it: phase in the support", lambda r: r["phase_split"]["support_on_circle"]),
    ("wrap lines", lambda r: r["phase_split"]["wrap_lines"]),
    (
        "the gate",
        lambda r: (
            r["phase_split"]["gate_support_given_zero"]
            + r["phase_split"]["gate_outside_given_phase"]
        ),
    ),
    ("aligned phase rms, rad (median)", lambda r: r["aligned"]["phase_rms"]["median"]),
)


def phase_head(load) -> str:
    """One row per model of ``phase_head.json``: where the twin-aware phase error lies."""
    result, train = load("phase_head.json"), load("cpu_train_angle_head.json")
    if result is None or train is None:
        return "`benchmarks/results/phase_head.json`: not measured yet"
    lines = [
        "| model | " + " | ".join(name for name, _ in PHASE_HEAD_COLUMNS) + " |",
        "| --- " * (len(PHASE_HEAD_COLUMNS) + 1) + "|",
    ]
    for row in result["rows"]:
        name = (
            "shipped `cnn.pt` (target head)"
            if row["phase_head"] == "target"
            else (f"angle head, gate ramp {row['phase_gate_width']:g}")
        )
        cells = " | ".join(f"{get(row):.4f}" for _, get in PHASE_HEAD_COLUMNS)
        lines.append(f"| {name} | {cells} |")
    a, steps = train["args"], train["final_val"]["steps"]
    lines += [
        "",
        f"Scored by `benchmarks/phase_head.py` on {result['patterns']:,} held-out patterns "
        f"of the paper's generator (aligned errors on the first {result['aligned_patterns']})"
        f" at commit `{result['git_sha'][:7]}`, {result['date'][:10]}, {result['machine']}, "
        f"load {result['load_before'][0]:.1f}. The angle model: `gpu_train.py --init-weights "
        f"{a['init_weights']} --phase-head {a['phase_head']}"
        f"{' --twin-invariant' if a['twin_invariant'] else ''} --lr {a['lr']:g} --budget-s "
        f"{a['budget_s']:.0f} --threads {a['threads']}` on {train['machine']} "
        f"({steps:,} steps of {a['batch_size']}; "
        "`benchmarks/results/cpu_train_angle_head.json`).",
    ]
    return "\n".join(lines)


PAGES = {
    "phasing.md": {"phasing-modes": phasing_modes, "phasing-chunks": phasing_chunks},
    "training.md": {"phase-head": phase_head},
    "scaling.md": {
        "measured-rates": measured_rates,
        "generation-scaling": generation_scaling,
    },
}


def _load_from(results: Path):
    def load(name: str) -> dict | None:
        path = results / name
        return json.loads(path.read_text()) if path.is_file() else None

    return load


def rebuilt(text: str, sections: dict, load) -> str:
    """``text`` with each section's marked block rebuilt."""
    for name, build in sections.items():
        begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
        if begin not in text or end not in text:
            raise SystemExit(f"no {begin} ... {end} markers")
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = f"{head}{begin}\n{build(load)}\n{end}{tail}"
    return text


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if a page is stale")
    p.add_argument("--docs", type=Path, default=ROOT / "docs", help="folder of the pages")
    p.add_argument("--results", type=Path, default=RESULTS, help="benchmark JSON folder")
    args = p.parse_args(argv)
    stale = False
    for page, sections in PAGES.items():
        path = args.docs / page
        text = path.read_text()
        new = rebuilt(text, sections, _load_from(args.results))
        if args.check:
            stale |= new != text
        elif new != text:
            path.write_text(new)
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
