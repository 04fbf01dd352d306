"""Build the README's measured sections from the benchmark JSON (never by hand).

Reads ``benchmarks/results/pretrained.json`` (``pretrained_eval.py``),
``pretrained_train.json`` (``package_pretrained.py``), ``cnn_schedule.json``
(``cnn_schedule.py``), ``scan54.json`` (``scan54.py``) and, for the benchmark table
(``readme_benchmarks.py``), the other files of ``benchmarks/results/``, and replaces the
text between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->`` in README.md for each
section NAME (``--check`` only reports whether it is up to date; a test runs it). A
section whose JSON is missing gets a one-line "not measured yet".

    python benchmarks/readme_tables.py            # rewrite the README section
    python benchmarks/readme_tables.py --check    # exit 1 if the README is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
SECTIONS = ("shipped-model", "scan54", "scan54-report", "benchmarks")
sys.path.insert(0, str(HERE))

import docs_tables  # noqa: E402
import readme_benchmarks  # noqa: E402
import readme_rows  # noqa: E402

PAPER = {"modulus": 0.019, "amplitude": 0.005, "phase": 0.029}
TARGET = {"modulus": 0.019, "amplitude_twin_aware": 0.02, "phase_twin_aware": 0.05}


def _load(name: str) -> dict:
    return json.loads((RESULTS / name).read_text())


def _load_if_there(name: str) -> dict | None:
    return _load(name) if (RESULTS / name).is_file() else None


def _earlier_leg(args: dict) -> str:
    """ ", warm-restarted from ..." when the run started from saved weights: the first leg as
    the model card records it."""
    card = ROOT / "platform" / "cdiflow" / "pretrained" / "cnn.json"
    if not args.get("init_weights") or not card.is_file():
        return ""
    leg = json.loads(card.read_text())["training"].get("previous")
    if not leg:
        return ""
    first = leg["args"]
    return (
        f", warm-restarted at lr {args['lr']:g} from a first leg of "
        f"{leg['train_seconds'] / 60:.0f} min, {leg['steps']} steps on "
        f"{first['initial_patterns']:,} patterns at lr {first['lr']:g}"
    )


def accuracy_table(evaluation: dict, training: dict) -> list[str]:
    fits = evaluation["test"]["gamma_fits"]
    prov = evaluation["provenance"]
    args = training["args"]
    lines = [
        f"Shipped model `platform/cdiflow/pretrained/cnn.pt`: width {args['width']}, depth "
        f"{args['depth']}, trained by `benchmarks/gpu_train.py` on {training['device']} for "
        f"{training['train_seconds'] / 60:.0f} min ({training['final_val']['steps']} steps of "
        f"{args['batch_size']}, {args['initial_patterns']:,} patterns, twin-invariant loss, "
        f"AdamW + one-cycle{_earlier_leg(args)}). Scored by `benchmarks/pretrained_eval.py` on "
        f"{evaluation['test']['patterns']:,} held-out patterns of the paper's generator "
        f"(seed {prov['args']['seed']}, never trained on); {prov['date'][:10]}, "
        f"{prov['machine']}, {prov['threads']} threads, load {prov['load_before'][0]:.1f}.",
        "",
        "| Gamma-fit mean chi^2 | modulus | amplitude | phase | amplitude (twin-aware) "
        "| phase (twin-aware) |",
        "| --- | --- | --- | --- | --- | --- |",
        "| paper (12 h, P100) | 0.019 | 0.005 | 0.029 | - | - |",
        "| target for this machine | <= 0.019 | - | - | <= 0.02 | <= 0.05 |",
    ]
    lines.append(f"| cdiflow, shipped model | {_accuracy_cells(fits)} |")
    sym = evaluation.get("symmetry_averaged")
    if sym:
        lines.append(
            f"| cdiflow, shipped model, {sym['count']}-fold symmetry averaging "
            f"| {_accuracy_cells(sym['gamma_fits'])} |"
        )
    return lines


def _accuracy_cells(fits: dict) -> str:
    kinds = ["modulus", "amplitude", "phase", "amplitude_twin_aware", "phase_twin_aware"]
    cells = []
    for kind in kinds:
        mean = fits[kind]["mean"]
        met = kind in TARGET and mean <= TARGET[kind]
        cells.append(f"**{mean:.3f}**" if met else f"{mean:.3f}")
    return " | ".join(cells)


def comparison_lines(evaluation: dict) -> list[str]:
    nns, inf = evaluation["nns"], evaluation["inference"]
    cnn_mean = nns["modulus_chi2"]["cnn"]["mean"]
    nns_mean = nns["modulus_chi2"]["nns"]["mean"]
    return [
        "",
        f"- Nearest-neighbour search over {nns['references']:,} training patterns, same "
        f"{nns['queries']} test patterns, one scoring path: modulus chi^2 {nns_mean:.3f} "
        f"against the CNN's {cnn_mean:.3f} (**{nns['nns_over_cnn_gamma_mean']:.1f}x**; target "
        f">= 4x; paper ~0.08 vs ~0.02), at "
        f"{1e3 * nns['seconds_per_pattern']['nns']:.1f} ms vs "
        f"{1e3 * nns['seconds_per_pattern']['cnn']:.2f} ms per pattern.",
        f"- CPU inference at batch {inf['batch']}, the package's CPU batch: "
        f"{inf['patterns_per_s']:.0f} patterns/s, {inf['gflops_achieved']:.0f} GFLOP/s = "
        f"**{100 * inf['fraction_of_matmul']:.0f}%** of the {inf['matmul_gflops']:.0f} GFLOP/s "
        "fp32 matmul rate, the two taking turns in the same run (target >= 50%)"
        f"{readme_rows.other_batches(inf)}.",
        *_symmetry_lines(evaluation),
    ]


def _symmetry_lines(evaluation: dict) -> list[str]:
    sym = evaluation.get("symmetry_averaged")
    if not sym:
        return []
    rate = sym["patterns_per_s"]
    return [
        f"- {sym['count']}-fold symmetry averaging (`cdiflow.models.symmetry.SymmetryAveraged`, "
        "the table's last row): the network is asked about the pattern's flips and "
        "transposes (the square's symmetries, each the pattern of the object flipped or "
        "transposed the same way), and its answers, each aligned to the plain one or its "
        "twin, are averaged. It costs "
        f"{sym['cost_ratio']:.1f}x the plain network's time ({rate['averaged']:.0f} against "
        f"{rate['plain']:.0f} patterns/s at batch {sym['batch']}, taking turns in the same "
        "run) and needs no training."
    ]


def _preset_scores(scores: dict) -> str:
    return "; ".join(
        f"{name} {s['chi2_modulus']:.3f} / {s['chi2_amplitude_twin_aware']:.3f} / "
        f"{s['chi2_phase_twin_aware']:.3f}"
        for name, s in scores.items()
    )


def preset_lines() -> list[str]:
    """Both presets' held-out scores as the model cards record them (mean chi^2)."""
    shipped = ROOT / "platform" / "cdiflow" / "pretrained"
    card = shipped / "cnn.json"
    scores = json.loads(card.read_text()).get("test_by_preset") if card.is_file() else None
    if not scores:
        return []
    count = next(iter(scores.values()))["patterns"]
    lines = [
        f"- Both presets, {count:,} held-out patterns each, mean chi^2 modulus / amplitude / "
        f"phase (twin-aware), from the model card: {_preset_scores(scores)}. The shipped "
        "model was trained on the paper's preset only, so the realistic one (counts, "
        "background, beamstop, gaps, oversampling 2 to 6) is far outside what it saw."
    ]
    realistic = shipped / "cnn_realistic.json"
    if realistic.is_file():
        lines.append(realistic_line(json.loads(realistic.read_text())))
    return lines


def realistic_line(card: dict) -> str:
    """The realistic-preset model: how it was trained and what its card scores."""
    training = card["training"]
    legs = [training]
    while legs[-1].get("previous", {}).get("args", {}).get("preset") == "realistic":
        legs.append(legs[-1]["previous"])  # earlier legs on the realistic preset
    trained = "; then ".join(
        f"{leg['steps']:,} steps of the realistic preset ({leg['train_seconds'] / 60:.0f} min "
        f"on {leg['device']}{', ' + leg['note'] if leg.get('note') else ''})"
        for leg in reversed(legs)
    )
    line = (
        f"- `{card['weights']}` (`--model pretrained-realistic`, for measured scans): the "
        f"shipped model given a mask input channel (its weights at zero) and trained on "
        f"{trained}. Same held-out patterns: {_preset_scores(card['test_by_preset'])}."
    )
    report = _load_if_there("scan54_report_realistic.json")
    if report:
        row = report["row"]
        line += (
            f" On scan 54 through the beamtime job: CNN alone chi^2 {row['cnn_chi2']:.3f}, "
            f"the answer {row['refined_chi2']:.2e}, verdict `{row['verdict']}` "
            "(`scan54_report_realistic.json`)."
        )
    return line


def schedule_lines(schedule: dict) -> list[str]:
    ref = schedule["reference"]
    lines = [
        "",
        f"Refining the shipped model's guess, {schedule['patterns']} held-out patterns "
        f"(`benchmarks/cnn_schedule.py`, {schedule['date'][:10]}, load "
        f"{schedule['load_before'][0]:.1f}); the reference is a random-phase rectangle start "
        "with the paper's schedule:",
        "",
        "| start, schedule | iterations | median chi^2 | amplitude error | phase rms (rad) "
        "| below random chi^2 |",
        "| --- | --- | --- | --- | --- | --- |",
        f"| random, `{ref['schedule']}` | {ref['iterations']} | {ref['median_chi2']:.2e} | "
        f"{ref['median_amplitude_error']:.4f} | {ref['median_phase_rms']:.3f} | - |",
    ]
    for row in schedule["candidates"]:
        name = f"**{row['name']}**" if row["name"] == schedule["chosen"] else row["name"]
        lines.append(
            f"| CNN, {name}: `{row['schedule']}`, beta {row['beta']} | {row['iterations']} | "
            f"{row['median_chi2']:.2e} | {row['median_amplitude_error']:.4f} | "
            f"{row['median_phase_rms']:.3f} | {100 * row['fraction_below_random_chi2']:.0f}% |"
        )
    return lines


def scan54_section() -> str:
    """The caption of the README's scan-54 images, from ``scan54.json``."""
    report = _load("scan54.json")
    refined = report["refined"]
    cnn = refined["cnn"]["mean"]
    rnd = refined["random-rectangle"]
    model = report["model"]
    name = model.get("path", model.get("ref", "?")).split("/")[-1]
    return (
        "A real measurement: Bragg CDI rocking scan 54 from APS 34-ID-C, the paper's "
        "beamline (the public `cohere_examples` data, BSD 2-Clause), reconstructed by "
        f"`benchmarks/scan54.py --model pretrained` with the shipped model (`{name}`), the "
        "beamtime job's own reading and preprocessing: amplitude and unwrapped phase after "
        f"CNN-seeded refinement, `{report['schedule']}` in a {report['upper_bound']}-pixel "
        f"upper bound. CNN alone chi^2 {report['cnn_chi2']:.2f}; refined from the CNN start "
        f"{cnn:.1e}; from {len(rnd['runs'])} random starts {rnd['mean']:.1e} +- {rnd['std']:.1e} "
        f"(`benchmarks/results/scan54.json`, load {report['loadavg'][0]:.1f})."
    )


def scan54_report_section() -> str:
    """The beamtime job's own figure of scan 54 and its caption, from ``scan54_report.json``."""
    report = _load("scan54_report.json")
    row, config = report["row"], report["config"]
    model = report["model"].get("ref", "?")
    return (
        "What `cdiflow reconstruct` writes for every scan (`previews/<scan>.png`, beside the "
        "CXI and HDF5 results and the HTML report), here for scan 54 with the default "
        f"settings and the model `{model}` (`benchmarks/scan54_report.py`): the pattern "
        "phased (grey: unmeasured), amplitude and phase with the support outline, and the "
        f"chi^2 curves of its {row['starts']} starts (the CNN's, refined with "
        f"`{config['guess']['schedule']}`, and random phases in its support, refined with "
        f"`{config['schedule']}`). CNN alone chi^2 {row['cnn_chi2']:.3f}; the "
        f"answer {row['refined_chi2']:.2e} after {row['iterations']} iterations; verdict "
        f"`{row['verdict']}` (starts agree to {row['consensus_error']:.3f}, support "
        f"{row['support_fraction']:.0%} of the upper bound; load "
        f"{report['load_before'][0]:.1f}).\n\n"
        f"![scan 54 as the beamtime job reports it](docs/images/{report['image']})"
    )


def shipped_model_section() -> str:
    evaluation, training = _load("pretrained.json"), _load("pretrained_train.json")
    lines = accuracy_table(evaluation, training) + comparison_lines(evaluation) + preset_lines()
    if (RESULTS / "cnn_schedule.json").is_file():
        lines += schedule_lines(_load("cnn_schedule.json"))
    lines += [
        "",
        "![chi^2 histograms of the shipped model](docs/images/pretrained_chi2_histograms.png)",
        "",
        "![held-out samples: truth and the shipped model](docs/images/pretrained_samples.png)",
    ]
    return "\n".join(lines)


def benchmarks_section() -> str:
    return readme_benchmarks.section(_load_if_there)


BUILDERS = {
    "shipped-model": shipped_model_section,
    "scan54": scan54_section,
    "scan54-report": scan54_report_section,
    "benchmarks": benchmarks_section,
}


def built(name: str) -> str:
    """Section ``name`` from the JSON, or one line saying which JSON is not there yet."""
    try:
        return BUILDERS[name]()
    except FileNotFoundError as missing:
        return (
            f"(not measured yet: `benchmarks/results/{Path(missing.filename).name}` is missing; "
            "run its benchmark, then `python benchmarks/readme_tables.py`)"
        )


def current(text: str, name: str) -> str:
    """What ``text`` holds between section ``name``'s markers."""
    begin, end = f"<!-- {name}:begin -->", f"<!-- {name}:end -->"
    if begin not in text or end not in text:
        raise SystemExit(f"README has no {begin} ... {end} markers")
    return text.split(begin, 1)[1].split(end, 1)[0].strip("\n")


def rebuilt(text: str) -> str:
    """``text`` with every marked section rebuilt from the JSON."""
    for name in SECTIONS:
        current(text, name)  # the markers are there, or a README-specific error
    builders = {name: (lambda _load, name=name: built(name)) for name in SECTIONS}
    return docs_tables.rebuilt(text, builders, load=None)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the README is stale")
    p.add_argument("--readme", default=str(ROOT / "README.md"))
    args = p.parse_args(argv)
    readme = Path(args.readme)
    text = readme.read_text()
    new = rebuilt(text)
    if args.check:
        return 0 if new == text else 1
    readme.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main())
