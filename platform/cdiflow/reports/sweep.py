"""Sweep reports: the trials as a CSV table and a parallel-coordinates figure (PNG).

matplotlib is imported inside the functions (Agg backend, no display needed).
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from cdiflow.formats.atomic import atomic_open


def write_summary(rows: list[dict[str, Any]], path: str | Path) -> Path:
    """Write one row per trial (the keys of the first row are the columns); return the path."""
    path = Path(path)
    columns: list[str] = []
    for row in rows:
        columns.extend(k for k in row if k not in columns)
    with atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row.get(k) for k in columns})
    return path


def _axis(values: list[Any]) -> tuple[list[float], list[tuple[float, str]]]:
    """Values of one parameter mapped to [0, 1], and (position, label) ticks for the axis.

    Numbers spanning more than a decade (all > 0) go on a log scale, as learning rates
    do; anything else that is not a number is categorical, in order of first appearance,
    with every level labelled.
    """
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) == len(values) and numbers:
        lo, hi = min(numbers), max(numbers)
        log = lo > 0 and hi / lo > 10
        f = (lambda x: math.log10(x)) if log else (lambda x: float(x))
        span = f(hi) - f(lo)
        scaled = [0.5 if span == 0 else (f(v) - f(lo)) / span for v in numbers]
        if span == 0:
            return scaled, [(0.5, f"{lo:.3g}")]
        return scaled, [(0.0, f"{lo:.3g}"), (1.0, f"{hi:.3g}")]
    levels = list(dict.fromkeys(str(v) for v in values))
    step = max(len(levels) - 1, 1)
    where = {level: (i / step if len(levels) > 1 else 0.5) for i, level in enumerate(levels)}
    return [where[str(v)] for v in values], [(y, level) for level, y in where.items()]


def plot_trials(rows: list[dict[str, Any]], keys: list[str], metric: str, path: str | Path) -> Path:
    """Parallel coordinates: one line per trial over the tuned keys and the metric.

    Lines are coloured by the metric (darker = lower = better); the best trial is drawn
    thick. Trials without the metric are left out. Returns the PNG path.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scored = [r for r in rows if isinstance(r.get(metric), float) and math.isfinite(r[metric])]
    axes_names = [*keys, metric]
    fig, ax = plt.subplots(figsize=(max(6.0, 1.6 * len(axes_names)), 4.0), dpi=100)
    if scored:
        columns = [_axis([r.get(k) for r in scored]) for k in axes_names]
        scores = [r[metric] for r in scored]
        lo, hi = min(scores), max(scores)
        cmap = plt.get_cmap("viridis")
        best = scores.index(lo)
        for i, _row in enumerate(scored):
            ys = [col[0][i] for col in columns]
            shade = 0.0 if hi == lo else (scores[i] - lo) / (hi - lo)
            ax.plot(
                range(len(axes_names)),
                ys,
                color=cmap(shade),
                lw=3.0 if i == best else 1.2,
                alpha=0.9,
                marker="o",
                ms=3,
            )
        for x, (_, ticks) in enumerate(columns):
            for y, label in ticks:
                ax.text(x + 0.03, y, label, ha="left", va="center", fontsize=7)
        sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(lo, hi))
        fig.colorbar(sm, ax=ax, label=metric)
    else:
        ax.text(0.5, 0.5, f"no trial reported {metric}", ha="center", transform=ax.transAxes)
    for x in range(len(axes_names)):
        ax.axvline(x, color="0.6", lw=0.8)
    ax.set_xticks(range(len(axes_names)), axes_names, rotation=20, fontsize=8)
    ax.set_yticks([])
    ax.set_ylim(-0.2, 1.2)
    ax.set_title(f"{len(scored)} trials (thick: best {metric})", fontsize=9)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path)
    plt.close(fig)
    return path
