"""Evaluation figures: chi^2 histograms with Gamma fits (paper Fig. 3), sample panels (Fig. 4).

matplotlib is imported inside the functions (Agg backend), so importing this is free.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np

ERROR_LABELS = {
    "modulus": r"modulus $\chi^2$",
    "amplitude": r"amplitude $\chi^2$",
    "phase": r"phase $\chi^2$",
    "amplitude_twin_aware": r"amplitude $\chi^2$ (twin-aware)",
    "phase_twin_aware": r"phase $\chi^2$ (twin-aware)",
}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def chi2_histograms(
    errors: Mapping[str, np.ndarray], fits: Mapping[str, Mapping[str, float]], path: str | Path
):
    """One histogram per error kind with its Gamma pdf and fitted mean; saved as PNG.

    Parameters
    ----------
    errors : {"modulus"|"amplitude"|"phase": (B,) float}, per-pattern chi^2 values.
    fits : {kind: {"shape", "scale", "mean"}} from ``cdiflow.pipelines.evaluate.gamma_fit``.
    path : PNG file to write. Returns the figure (closed by the caller or by logging).
    """
    from scipy import stats

    plt = _pyplot()
    kinds = [k for k in ERROR_LABELS if k in errors]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.4), squeeze=False)
    for ax, kind in zip(axes[0], kinds, strict=True):
        values = np.asarray(errors[kind], dtype=np.float64)
        ax.hist(values, bins=min(40, max(5, values.size // 5)), density=True, alpha=0.6)
        fit = fits.get(kind)
        if fit and math.isfinite(fit.get("shape", math.nan)):
            grid = np.linspace(0, float(values.max()) * 1.05 + 1e-12, 200)
            ax.plot(grid, stats.gamma.pdf(grid, fit["shape"], scale=fit["scale"]), "r-")
            ax.axvline(fit["mean"], color="k", linestyle="--")
            ax.set_title(f"{ERROR_LABELS[kind]}: Gamma mean {fit['mean']:.4g}", fontsize=10)
        else:
            ax.set_title(ERROR_LABELS[kind], fontsize=10)
        ax.set_xlabel(ERROR_LABELS[kind])
        ax.set_ylabel("density")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return fig


def sample_panel(
    modulus: np.ndarray,
    amplitude: np.ndarray,
    phase: np.ndarray,
    prediction: np.ndarray,
    path: str | Path,
):
    """Rows = samples; columns: input modulus (log), true / predicted amplitude and phase.

    Parameters
    ----------
    modulus : (S, P, P) float, centred diffraction modulus.
    amplitude, phase : (S, N, N) float truth (phase as the target in [0, 1]).
    prediction : (S, 2, N, N) float, channel 0 amplitude, 1 phase target.
    """
    plt = _pyplot()
    titles = ["input |F| (log)", "amplitude truth", "amplitude CNN", "phase truth", "phase CNN"]
    rows = modulus.shape[0]
    fig, axes = plt.subplots(rows, 5, figsize=(10, 2.0 * rows), squeeze=False)
    for r in range(rows):
        images = [
            np.log10(modulus[r] + 1e-4),
            amplitude[r],
            prediction[r, 0],
            phase[r],
            prediction[r, 1],
        ]
        limits = [(None, None), (0, 1), (0, 1), (0, 1), (0, 1)]
        for c, (image, (lo, hi)) in enumerate(zip(images, limits, strict=True)):
            ax = axes[r, c]
            ax.imshow(image, cmap="twilight" if c >= 3 else "viridis", vmin=lo, vmax=hi)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return fig


def training_curves(history: Mapping[str, list[tuple[int, float]]], path: str | Path):
    """Loss and validation chi^2 per epoch (log scale); saved as PNG.

    ``history``: {metric name: [(epoch, value), ...]}, e.g. from MLflow's metric history.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, points in sorted(history.items()):
        if points:
            steps, values = zip(*sorted(points), strict=True)
            ax.plot(steps, values, marker="o", markersize=3, label=name)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return fig
