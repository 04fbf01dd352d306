"""What the beamtime job tells its user (``cdiflow.pipelines.reconstruct``): the progress
lines while it runs, and at the end summary.parquet / summary.csv, report.html and the
``BeamtimeOutcome`` it returns.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from pathlib import Path
from typing import Any

from cdiflow import __version__
from cdiflow.beamtime.config import ReconstructConfig
from cdiflow.beamtime.report import write_report
from cdiflow.beamtime.results import write_summary


@dataclasses.dataclass(frozen=True)
class BeamtimeOutcome:
    """What a run did."""

    out: Path
    rows: list[dict[str, Any]]
    summary_parquet: Path
    summary_csv: Path
    report: Path
    seconds: float
    processed: int  # scans run through the pipeline this time
    skipped: int  # scans whose finished result was kept

    @property
    def failed(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] != "ok"]

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.rows if r["status"] == "ok"]

    @property
    def suspect(self) -> list[dict[str, Any]]:
        """Finished scans whose verdict is ``suspect: <reason>`` (``scan_verdict``)."""
        return [r for r in self.ok if str(r.get("verdict") or "").startswith("suspect")]


def progress_line(count: int, total: int, row: dict, redone: dict[str, str]) -> str:
    """The line printed when a scan finishes: its chi^2 values, or why it failed."""
    if row["status"] == "ok":
        what = f"ok  CNN chi2 {row['cnn_chi2']:.3g}  refined chi2 {row['refined_chi2']:.3g}"
        what += f"  {row['verdict']}" if row.get("verdict", "ok") != "ok" else ""
    else:
        what = f"FAILED ({row['stage']}: {row['reason']})"
    why = redone.get(row["key"])
    return f"[{count}/{total}] {row['scan']}: {what}" + (f"  (redone: {why})" if why else "")


def plan_line(total: int, done: int, todo: int, redone: dict[str, str]) -> str:
    """The first line: how many scans are kept, how many run, and why some are redone."""
    line = f"{total} scan(s): {done} already finished, {todo} to reconstruct"
    if redone:
        counts = Counter(redone.values())
        line += " (redone: " + "; ".join(f"{n} {why}" for why, n in counts.items()) + ")"
    return line


def write_tables(
    out: Path,
    rows: list[dict],
    sources: list,
    model_info: dict,
    config: ReconstructConfig,
    seconds: float,
    processed: int,
    done: dict[str, dict],
) -> BeamtimeOutcome:
    """Write the summary tables and the report over every row; the run's outcome."""
    parquet, csv = write_summary(out, rows)
    header = {
        "sources": ", ".join(str(s) for s in sources),
        "model": model_info.get("pinned_ref", "(no scan run this time)"),
        "start": config.start,
        "starts per scan": config.starts,
        "schedule": config.schedule,
        "config hash": config.config_hash,
        "cdiflow": __version__,
        "wall time, s": round(seconds, 1),
        "skipped (finished earlier)": len(done),
    }
    report = write_report(out, rows, header)
    return BeamtimeOutcome(
        out=out,
        rows=rows,
        summary_parquet=parquet,
        summary_csv=csv,
        report=report,
        seconds=seconds,
        processed=processed,
        skipped=len(done),
    )
