"""A small strict reader of SPEC data files (the scan log of APS 34-ID-C).

Why not a library: silx's ``specfile`` is a C extension inside a large toolkit, and
``spec2nexus`` is a converter whose PyPI release dates from 2021; what a beamtime job
needs from the log is a few header lines per scan, so this parser reads exactly those
and refuses what it does not understand.

A SPEC file is text; a scan starts at ``#S <number> <command...>`` and runs to the next
``#S``. From each scan this reads ``#S`` (number and command), ``#D`` (date), ``#N``
(columns), ``#L`` (column labels), ``#Readout``, ``#UIMDET`` and ``#UIMR<k>`` (the
areaDetector ROIs: ``name minX sizeX minY sizeY bgdWidth``) and counts the data rows
(lines that do not start with ``#``). Numbers in rows are not parsed.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from cdiflow.formats.scan import ScanReadError

_SCAN_COMMANDS_WITH_MOTOR = {"ascan", "dscan", "lup", "rscan", "a2scan", "d2scan", "mesh"}


@dataclasses.dataclass(frozen=True)
class DetectorROI:
    """An areaDetector ROI from a ``#UIMR<k>`` line (pixels, detector frame)."""

    index: int
    min_x: int
    size_x: int
    min_y: int
    size_y: int


@dataclasses.dataclass(frozen=True)
class SpecScan:
    """The header of one ``#S`` block of a SPEC file.

    Attributes
    ----------
    number : int
        The scan number of ``#S``.
    command : str
        The full command, e.g. ``ascan  th -0.279996 0.720004  200 0.25``.
    points : int
        Data rows actually logged (one per detector frame for a step scan).
    planned_points : int or None
        Points the command asked for (intervals + 1 for ``ascan``/``dscan``), None when
        the command has no such count.
    """

    number: int
    command: str
    date: str = ""
    labels: tuple[str, ...] = ()
    points: int = 0
    planned_points: int | None = None
    readout: tuple[int, int, int, int] | None = None
    detector: str = ""
    rois: tuple[DetectorROI, ...] = ()
    line: int = 0

    @property
    def scan_type(self) -> str:
        """First word of the command (``ascan``)."""
        return self.command.split()[0] if self.command.split() else ""

    @property
    def motor(self) -> str:
        """The scanned motor (``th``) for one-motor step scans, else ``""``."""
        words = self.command.split()
        if len(words) > 1 and words[0] in _SCAN_COMMANDS_WITH_MOTOR:
            return words[1]
        return ""


def _planned_points(command: str) -> int | None:
    """``ascan m start end intervals time`` -> intervals + 1; None for other commands."""
    words = command.split()
    if len(words) == 6 and words[0] in {"ascan", "dscan", "lup", "rscan"}:
        try:
            return int(words[4]) + 1
        except ValueError:
            return None
    return None


def _ints(words: list[str], where: str, path: Path, lineno: int) -> list[int]:
    try:
        return [int(w) for w in words]
    except ValueError:
        raise ScanReadError(path, f"line {lineno}: bad {where} line", kind="bad_spec") from None


def read_spec(path: str | Path) -> dict[int, SpecScan]:
    """Parse a SPEC file into its scan headers, keyed by scan number.

    Parameters
    ----------
    path : str or Path
        The ``.spec`` file.

    Returns
    -------
    dict int -> SpecScan, in file order. When a number repeats (SPEC restarted), the
    last block wins, as it is the one whose data folder the detector overwrote.

    Raises
    ------
    ScanReadError
        Missing or unreadable file, or an ``#S`` line without a scan number.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="latin-1")
    except OSError as exc:
        raise ScanReadError(path, f"cannot read spec file ({exc.strerror})") from None
    scans: dict[int, SpecScan] = {}
    current: dict | None = None

    def close() -> None:
        if current is not None:
            scans[current["number"]] = SpecScan(**current)

    for lineno, line in enumerate(text.splitlines(), start=1):
        if line.startswith("#S "):
            close()
            current = _new_block(line, lineno, path)
        elif current is not None:  # lines before the first ``#S`` belong to no scan
            _read_line(current, line, lineno, path)
    close()
    for number, scan in scans.items():
        scans[number] = dataclasses.replace(scan, rois=tuple(scan.rois))
    if not scans:
        raise ScanReadError(path, "no '#S' scan in the spec file", kind="bad_spec")
    return scans


def _new_block(line: str, lineno: int, path: Path) -> dict:
    """The fields of the scan an ``#S`` line opens; its other lines fill them in."""
    words = line[3:].split(maxsplit=1)
    if not words or not words[0].isdigit():
        raise ScanReadError(path, f"line {lineno}: '#S' without a scan number", "bad_spec")
    command = words[1].strip() if len(words) > 1 else ""
    return {
        "number": int(words[0]),
        "command": command,
        "planned_points": _planned_points(command),
        "points": 0,
        "rois": [],
        "line": lineno,
    }


def _read_line(current: dict, line: str, lineno: int, path: Path) -> None:
    """One line inside a scan block: a data point or a header cdiflow uses, else nothing."""
    if line and not line.startswith("#"):
        current["points"] += 1
    elif line.startswith("#D "):
        current["date"] = line[3:].strip()
    elif line.startswith("#L "):
        current["labels"] = tuple(line[3:].split("  "))
    elif line.startswith("#Readout"):
        values = _ints(line.split()[1:], "#Readout", path, lineno)
        if len(values) == 4:
            current["readout"] = tuple(values)
    elif line.startswith("#UIMDET"):
        current["detector"] = line[len("#UIMDET") :].strip().rstrip(":")
    elif m := re.match(r"#UIMR(\d+)\s+(.*)", line):
        values = _ints(m.group(2).split()[:4], "#UIMR", path, lineno)
        if len(values) == 4:
            current["rois"].append(DetectorROI(int(m.group(1)), *values))
