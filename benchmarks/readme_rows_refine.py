"""README benchmark rows for CNN-seeded refinement, adaptation and native resolution.

Builders as in ``readme_rows.py`` (same helpers, same contract): each takes the loaded
JSON of its files and returns the "what", "measured" and "target" cells. The targets
are the issues' requirements, typed here.
"""

from __future__ import annotations

from readme_rows import _met

SEEDED_FRACTION, SEEDED_REACH = 0.9, 60  # CNN start below the random median; iterations
ADAPTED_CHI2 = 0.05  # scan 54, adapted CNN
BOUNDED_MIB = 2048  # a refinement worker's peak at the largest size, on 2 cores


def _share(x) -> str:
    return "-" if x is None else f"{x:.0%}"


def seeded(s):
    summary, timing = s["summary"], s["timing"]
    kind = "random-rectangle"
    chi2 = summary["fraction_cnn_below_random_median_chi2"][kind]
    image = summary["fraction_cnn_below_random_median_image_error"][kind]["amplitude_error"]
    reach = summary["iterations_to_random_median"][kind]
    variants = "; ".join(
        f"`{name}` ({_iterations(v)}beta {v['beta']}{_support(v.get('median_support_pixels'))}): "
        f"{_share(v[kind]['fraction_below_random_median_chi2'])} / "
        f"{_share(v[kind]['fraction_below_random_median_image_error']['amplitude_error'])}"
        for name, v in s["cnn_variants"].items()
    )
    sizes = summary.get("median_support_pixels")
    supports = (
        f" Median answer support: CNN start {sizes['cnn']:.0f} px, random {sizes[kind]:.0f} px "
        "(chi^2 falls as a support loosens)."
        if sizes
        else ""
    )
    guess = s["settings"]["cnn"]
    diagnosis = _diagnosis(s.get("cnn_start_diagnosis"), kind)
    work = s.get("work_to_random_median")  # every candidate's iterations counted
    return (
        f"CNN-seeded refinement, {summary['patterns']} held-out patterns, shipped model; "
        f"random starts {summary['repeats']} runs each with `{s['settings'][kind]['schedule']}`",
        f"CNN start with {_settings(guess)} (beta {guess['beta']}) below the random "
        f"median: **{_share(chi2)}** on chi^2, **{_share(image)}** on amplitude error; "
        f"reaches the random median chi^2 in {_work(reach, work)} (median; "
        f"{reach['nulls']} never do); time per pattern "
        f"{timing['cnn_seeded_seconds_per_pattern'] * 1e3:.0f} ms vs "
        f"{timing['random_600_seconds_per_pattern'] * 1e3:.0f} ms "
        f"({timing['random_600_iterations']} iterations).{supports}{diagnosis} Other "
        f"CNN-start refinements (`seeded_refinement.py`'s variants), chi^2 / amplitude-error "
        f"share: {variants}",
        f">= {SEEDED_FRACTION:.0%} on both: {_met(min(chi2, image) >= SEEDED_FRACTION)}; "
        f"<= {SEEDED_REACH} iterations of work: {_met(work is not None and work <= SEEDED_REACH)}",
    )


def _diagnosis(d: dict | None, kind: str) -> str:
    """Where the CNN start loses, from the unrefined guess's errors (older runs: none)."""
    if not d:
        return ""
    k = d[kind]
    raw = k["fraction_unrefined_below_random_median"]
    lose, win = k["unrefined_median_where_refined_loses"], k["unrefined_median_where_refined_wins"]
    return (
        f" Unrefined, the guess is below the random median on amplitude error in "
        f"{_share(raw['amplitude_error'])} of patterns but on phase RMS in only "
        f"{_share(raw['phase_rms'])}; its median phase RMS is {lose['phase_rms']:.2f} rad "
        f"where the refined start loses on amplitude error "
        f"({k['patterns_refined_loses_amplitude_error']} patterns), {win['phase_rms']:.2f} "
        "where it wins."
    )


def _settings(v: dict) -> str:
    """A refinement's settings in words: candidates, schedule, tail."""
    k, tail = v.get("candidates", 1), v.get("tail", "")
    text = f"`{v['schedule']}`" + (f" then `{tail}`" if tail else "")
    return text if k == 1 else f"{k} candidates (the guess and random-phase copies) x {text}"


def _iterations(v: dict) -> str:
    work = v.get("iterations_of_work")
    return "" if work is None else f"{work} iterations of work, "


def _work(reach: dict, work) -> str:
    """Iterations to the random median: the winner's, and the work with every candidate."""
    text = f"{reach['median']} iterations"
    return text if work is None else f"{text} ({work:.0f} of work)"


def _support(pixels) -> str:
    return "" if pixels is None else f", support {pixels:.0f} px"


def adapted(a):
    job, old = a["geometries"]["job"], a["geometries"]["crop128-bin2"]
    return (
        f"real scan {a['scan']}: CNN adapted to the pattern (`--adapt`, "
        f"{job['adapt']['steps']} steps, physics term only)",
        f"chi^2 {job['cnn_chi2']:.3f} -> **{job['adapted_cnn_chi2']:.4f}** (the job's window); "
        f"{old['cnn_chi2']:.2f} -> {old['adapted_cnn_chi2']:.4f} (crop 128, bin 2)"
        + _refined_from_adapted(job),
        f"<= {ADAPTED_CHI2}: {_met(job['adapted_cnn_chi2'] <= ADAPTED_CHI2)}"
        + _refined_target(job),
    )


def _same_settings(job) -> tuple[str, dict] | None:
    """The settings set that gives every start the guess settings, if the run has it."""
    sets = job["refined"].get("settings", {})
    return next(((k, v) for k, v in sets.items() if k.startswith("seeded")), None)


def _refined_from_adapted(job) -> str:
    same = _same_settings(job)
    if same is None:
        return ""
    label, r = same
    return (
        f"; refined ({label}: {_settings(r['adapted-cnn']['settings'])}): adapted start "
        f"{r['adapted-cnn']['chi2']:.3e}, CNN start {r['cnn']['chi2']:.3e}, best of "
        f"{sum(k.startswith('random-') for k in r)} random {r['random_best_chi2']:.3e}"
    )


def _refined_target(job) -> str:
    same = _same_settings(job)
    if same is None:
        return ""
    ok = same[1]["adapted_no_worse_than_best_random_chi2"]
    return f"; refined from the adapted start <= best random, same settings: {_met(ok)}"


def native(n):
    cases = n["cases"]
    parts = [
        f"{name} (size {c['refine_size']}, {c['start']} start): {c['refined_chi2']:.1e}, "
        f"{c['verdict']}, consensus {c['consensus_error']:.3f}"
        for name, c in cases.items()
    ]
    return (
        f"real scan `{n['scan']}` at the CNN's size and native size, `{n['schedule']}`, "
        f"{next(iter(cases.values()))['starts']} starts (chi^2 over each case's own pattern)",
        "; ".join(parts),
        "-",
    )


def sizes(r):
    runs = r["runs"]
    cells = [
        f"size {x['size']}, {x['scans']} scans: {x['seconds_per_scan']:.1f} s/scan, "
        f"peak {x['peak_rss_mib']:.0f} MiB"
        for x in runs
    ]
    largest = max(x["size"] for x in runs)
    peak = max(x["peak_rss_mib"] for x in runs if x["size"] == largest)
    return (
        f"refinement by size, `{r['schedule']}`, {runs[0]['starts']} starts per scan",
        "; ".join(cells),
        f"memory bounded at size {largest} (< {BOUNDED_MIB} MiB): {_met(peak < BOUNDED_MIB)}",
    )


ROWS_REFINE = [
    (["seeded_refinement.json"], "CNN-seeded refinement", "", seeded),
    (["adapt_scan54.json"], "scan 54 adapted", "", adapted),
    (["scan54_native.json"], "scan 54 native", "", native),
    (["refine_sizes.json"], "refinement sizes", "", sizes),
]
