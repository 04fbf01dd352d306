"""The HTML report of a beamtime reconstruction, and small figures (matplotlib, Agg).

``write_report`` writes ``report.html`` next to the summary table: counts, the suspect
scans in their own section (ok scans whose verdict is ``suspect: <reason>``, with the
numbers the verdict was judged on), the table (one row per scan, failed rows with their
reason) and each scan's figure (``cdiflow.beamtime.report_figure.save_preview``) at a
readable width, each a link to the full PNG. ``save_image`` draws one labelled image.
Every text that came from a file name or an error message is HTML-escaped.
"""

from __future__ import annotations

import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from cdiflow.beamtime.results import REPORT_HTML, atomic_write_bytes


def _figure(width: float, height: float):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=100)


def save_image(
    path: str | Path,
    image: np.ndarray,
    title: str,
    cmap: str,
    label: str,
    percentiles: tuple[float, float] = (0.0, 100.0),
) -> Path:
    """One labelled image with a colour bar as a small PNG (README figures).

    NaN pixels are blank; the colour range spans ``percentiles`` of the finite values.
    """
    fig = _figure(3.4, 3.0)
    ax = fig.subplots()
    finite = np.isfinite(image)
    lo, hi = np.percentile(image[finite], percentiles) if finite.any() else (0.0, 1.0)
    im = ax.imshow(np.ma.masked_invalid(image), cmap=cmap, vmin=float(lo), vmax=float(hi))
    ax.set_title(title, fontsize=9)
    ax.set_xticks([])
    ax.set_yticks([])
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label=label)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        return f"{value:.3g}"
    return str(value)


_COLUMNS = (
    ("scan", "scan"),
    ("status", "status"),
    ("verdict", "verdict"),
    ("reason", "reason"),
    ("cnn_chi2", "CNN chi2"),
    ("refined_chi2", "refined chi2"),
    ("starts", "starts"),
    ("consensus_error", "consensus"),
    ("support_fraction", "support fraction"),
    ("oversampling_y", "os y"),
    ("oversampling_x", "os x"),
    ("t_read", "read s"),
    ("t_preprocess", "prep s"),
    ("t_cnn", "CNN s"),
    ("t_refine", "refine s"),
    ("t_write", "write s"),
)

# The suspect-scans section: what each reason is judged on (scan_verdict).
_SUSPECT_COLUMNS = (
    ("scan", "scan"),
    ("verdict", "why"),
    ("refined_chi2", "refined chi2"),
    ("chi2_converged", "chi2 converged"),
    ("starts", "starts"),
    ("consensus_error", "consensus error"),
    ("support_fraction", "support fraction"),
)

_STYLE = """
body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 6px}tr.failed{background:#fde8e8}
tr.suspect{background:#fff4d6}
.thumbs{display:flex;flex-wrap:wrap;gap:16px}.thumbs figure{margin:0;font-size:13px}
.thumbs img{width:min(100%, 900px);height:auto;border:1px solid #ddd}
"""


def row_class(row: dict[str, Any]) -> str:
    """``"failed"``, ``"suspect"`` (an ok scan whose verdict is ``suspect: ...``) or ``"ok"``."""
    if row.get("status") != "ok":
        return "failed"
    return "suspect" if str(row.get("verdict") or "").startswith("suspect") else "ok"


def _table(rows: list[dict[str, Any]], columns) -> list[str]:
    e = html.escape
    parts = ["<table><tr>", *(f"<th>{e(label)}</th>" for _, label in columns), "</tr>"]
    for row in rows:
        cells = "".join(f"<td>{e(_fmt(row.get(name)))}</td>" for name, _ in columns)
        parts.append(f"<tr class='{row_class(row)}'>{cells}</tr>")
    parts.append("</table>")
    return parts


def _suspect_section(rows: list[dict[str, Any]]) -> list[str]:
    """Suspect scans in their own table: the reasons, and the numbers behind them."""
    suspect = [r for r in rows if row_class(r) == "suspect"]
    parts = [f"<h2 id='suspect'>Suspect scans ({len(suspect)})</h2>"]
    if not suspect:
        return parts + ["<p>None: every finished scan reads ok.</p>"]
    parts.append(
        "<p>Finished, but not to be trusted without a look: the support fills the upper "
        "bound, the refinement starts disagree, chi2 did not converge, or the pattern "
        "has too few photons.</p>"
    )
    return parts + _table(suspect, _SUSPECT_COLUMNS)


def write_report(out: str | Path, rows: list[dict[str, Any]], header: dict[str, Any]) -> Path:
    """Write ``out/report.html``: header facts, suspect scans, the table and the figures.

    ``rows`` are summary rows (``preview`` paths relative to ``out``); ``header`` maps
    labels to values (beamtime, model, schedule, counts, wall time).
    """
    e = html.escape
    kinds = [row_class(r) for r in rows]
    ok = [r for r, kind in zip(rows, kinds, strict=True) if kind != "failed"]
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'><title>cdiflow beamtime report"
        f"</title><style>{_STYLE}</style></head><body>",
        "<h1>cdiflow beamtime reconstruction</h1><ul>",
    ]
    for label, value in header.items():
        parts.append(f"<li><b>{e(str(label))}</b>: {e(_fmt(value))}</li>")
    counts = ", ".join(f"{kinds.count(k)} {k}" for k in ("ok", "suspect", "failed"))
    parts.append(f"<li><b>scans</b>: {len(rows)} ({counts})</li></ul>")
    parts += _suspect_section(rows)
    parts.append("<h2>Scans</h2>")
    parts += _table(rows, _COLUMNS)
    parts.append("<h2>Reconstructions</h2><div class='thumbs'>")
    for row in ok:
        if row.get("preview"):
            src = e(str(row["preview"]), quote=True)
            caption = f"{e(str(row['scan']))} chi2 {e(_fmt(row.get('refined_chi2')))}"
            if row_class(row) == "suspect":
                caption += " (suspect)"
            parts.append(
                f"<figure><a href='{src}'><img src='{src}' alt='{e(str(row['scan']), quote=True)}'>"
                f"</a><figcaption>{caption}</figcaption></figure>"
            )
    parts.append("</div></body></html>\n")
    path = Path(out) / REPORT_HTML
    atomic_write_bytes(path, "".join(parts).encode("utf-8"))
    return path
