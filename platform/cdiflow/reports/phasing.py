"""Figures of the phasing comparisons: Fig. 5(f) curves, Fig. 6 panel, NNS histogram,
and the distributions over many patterns (final chi^2 per start, CNN vs random scatter).

matplotlib is imported inside each function (Agg backend), so importing this module is
cheap. Every function writes one PNG and returns its path.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from skimage.restoration import unwrap_phase

LABELS = {
    "random-rectangle": "random phase + rectangle support",
    "random-cnn-support": "random phase + CNN support",
    "cnn": "CNN phase + support",
    "nns": "NNS phase + support",
}
COLOURS = {
    "random-rectangle": "tab:blue",
    "random-cnn-support": "tab:green",
    "cnn": "tab:orange",
    "nns": "tab:red",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt, fig, path) -> Path:
    """Lay ``fig`` out, write it to ``path`` (120 dpi), close it; the path."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _band(curves: np.ndarray, band: str) -> tuple[np.ndarray, ...]:
    """(centre, low, high) per iteration over the runs: mean +- std, or median, 16-84%."""
    if band == "std":
        mean, std = curves.mean(0), curves.std(0)
        return mean, np.clip(mean - std, 1e-12, None), mean + std
    if band == "percentile":
        low, median, high = np.percentile(curves, (16, 50, 84), axis=0)
        return median, low, high
    raise ValueError(f"band must be 'std' or 'percentile', got {band!r}")


def plot_chi2_curves(runs: dict, path, title: str = "", band: str = "std") -> Path:
    """Fig. 5(f): chi^2 against iteration; a band where a start has many runs.

    ``runs`` maps a start name to a (R, n_iter) array of chi^2 curves or to an object with
    such a ``chi2`` (``cdiflow.phasing.compare.StartRun``). ``band``: "std" (mean +- std,
    as the paper) or "percentile" (median and the 16-84% range).
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    what = "mean" if band == "std" else "median"
    for name, run in runs.items():
        curves = np.asarray(getattr(run, "chi2", run), dtype=np.float64)
        it = np.arange(1, curves.shape[1] + 1)
        colour = COLOURS.get(name)
        label = LABELS.get(name, name)
        if curves.shape[0] > 1:
            centre, low, high = _band(curves, band)
            ax.plot(it, centre, color=colour, label=f"{label} ({what} of {curves.shape[0]})")
            ax.fill_between(it, low, high, color=colour, alpha=0.25, linewidth=0)
        else:
            ax.plot(it, curves[0], color=colour, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("iteration")
    ax.set_ylabel(r"$\chi^2$")
    ax.set_title(title or r"$\chi^2$ against iteration (Fig. 5f)")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def unwrapped_phase(obj: np.ndarray, threshold: float = 0.1) -> np.ma.MaskedArray:
    """Phase of a complex image, unwrapped (Herraez 2002, skimage) inside its support."""
    obj = np.asarray(obj)
    amp = np.abs(obj)
    support = amp > threshold * amp.max() if amp.max() > 0 else np.zeros(amp.shape, bool)
    masked = np.ma.masked_array(np.angle(obj), mask=~support)
    if support.sum() < 2:
        return masked
    return unwrap_phase(masked)


def plot_evolution_panel(runs: dict, path, title: str = "") -> Path:
    """Fig. 6: per start, amplitudes then unwrapped phases at the snapshot iterations."""
    plt = _pyplot()
    names = [n for n, r in runs.items() if r.snapshots]
    iterations = sorted(next(iter(runs.values())).snapshots) if names else []
    ncol = 2 * len(iterations)
    fig, axes = plt.subplots(
        len(names), ncol, figsize=(1.6 * ncol, 1.7 * len(names) + 0.4), squeeze=False
    )
    for row, name in enumerate(names):
        for j, it in enumerate(iterations):
            obj = np.asarray(runs[name].snapshots[it])
            amp_ax, ph_ax = axes[row][j], axes[row][len(iterations) + j]
            amp_ax.imshow(np.abs(obj), cmap="gray")
            phase = unwrapped_phase(obj)
            ph_ax.imshow(phase, cmap="viridis")
            if row == 0:
                amp_ax.set_title(f"|x| it {it}", fontsize=7)
                ph_ax.set_title(f"phase it {it}", fontsize=7)
        axes[row][0].set_ylabel(LABELS.get(name, name), fontsize=6)
    for ax in np.ravel(axes):
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title or "Reconstructions against iteration (Fig. 6)", fontsize=9)
    return _save(plt, fig, path)


def plot_chi2_histogram(values: dict, path, title: str = "") -> Path:
    """Histograms of chi^2 per pattern, one per method (e.g. {"NNS": ..., "CNN": ...})."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    finite = [np.asarray(v)[np.isfinite(v)] for v in values.values()]
    lo = max(min((v[v > 0].min() for v in finite if (v > 0).any()), default=1e-6), 1e-8)
    hi = max((v.max() for v in finite if v.size), default=1.0)
    bins = np.logspace(np.log10(lo), np.log10(max(hi, lo * 10)), 40)
    for name, f in zip(values, finite, strict=True):
        ax.hist(f, bins=bins, alpha=0.6, label=f"{name} (mean {f.mean():.3g})")
    ax.set_xscale("log")
    ax.set_xlabel(r"$\chi^2$ (eq. 5, scale fitted)")
    ax.set_ylabel("patterns")
    ax.set_title(title or r"$\chi^2$ per test pattern")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)


def plot_final_chi2_distributions(values: dict, path, title: str = "") -> Path:
    """Box plot of final chi^2 per start kind over all patterns (and all runs).

    ``values`` maps a start name to its final chi^2: (N,) or (N, R) (every run counts);
    non-finite values are left out.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    names = list(values)
    data = [np.ravel(np.asarray(values[n], dtype=np.float64)) for n in names]
    data = [d[np.isfinite(d) & (d > 0)] for d in data]
    ax.boxplot(data, whis=(5, 95), showfliers=True, flierprops={"markersize": 2})
    ax.set_xticks(range(1, len(names) + 1))
    ticks = [LABELS.get(n, n).replace(" + ", "\n+ ") for n in names]
    ticks = [f"{t}\n({d.size} runs)" for t, d in zip(ticks, data, strict=True)]
    ax.set_xticklabels(ticks, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel(r"final $\chi^2$")
    ax.set_title(title or r"final $\chi^2$ per start (whiskers 5-95%)", fontsize=9)
    return _save(plt, fig, path)


def plot_cnn_vs_random(cnn, random_medians: dict, path, title: str = "") -> Path:
    """Scatter of the CNN start's final chi^2 against the random starts' median, per pattern.

    ``cnn`` is (N,); ``random_medians`` maps a random start name to (N,) medians over its
    runs. Points under the diagonal are patterns where the CNN start ends lower.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    y = np.asarray(cnn, dtype=np.float64)
    seen = [y[np.isfinite(y) & (y > 0)]]
    for name, med in random_medians.items():
        x = np.asarray(med, dtype=np.float64)
        ok = np.isfinite(x) & np.isfinite(y) & (x > 0) & (y > 0)
        below = int(np.sum(y[ok] < x[ok]))
        label = f"vs {LABELS.get(name, name)} ({below}/{int(ok.sum())} below)"
        ax.scatter(x[ok], y[ok], s=10, alpha=0.7, color=COLOURS.get(name), label=label)
        seen.append(x[ok])
    both = np.concatenate(seen)
    lo, hi = (both.min(), both.max()) if both.size else (1e-4, 1.0)
    lo, hi = lo / 1.5, max(hi * 1.5, lo * 10)
    ax.plot([lo, hi], [lo, hi], color="k", linewidth=0.8, linestyle="--", label="equal")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel(r"random start: median final $\chi^2$")
    ax.set_ylabel(r"CNN start: final $\chi^2$")
    ax.set_title(title or r"final $\chi^2$ per pattern", fontsize=9)
    ax.legend(fontsize=6)
    return _save(plt, fig, path)
