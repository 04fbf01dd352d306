"""The per-scan figure of a beamtime reconstruction: ``previews/<key>.png``.

``save_preview`` draws one finished scan row (matplotlib, Agg) as a grid of panels:

- ``pattern``: the pattern phased (``refine_modulus``, ``refine_mask``; the CNN's
  ``modulus``, ``mask`` when the row has no refinement pattern) as log10 intensity
  with a colour bar, the unmeasured pixels (mask False) flat grey;
- ``amplitude`` and ``phase``: the answer's amplitude and unwrapped phase (radians, NaN
  outside the support: blank), colour bars, the support outline (red) on both;
- ``chi2``: every start's chi^2 per iteration (``start_chi2_curves``, log y), the
  answer's run (the row's ``answer_start``: the start whose curve is its ``chi2_curve``)
  highlighted;
- ``truth amplitude`` and ``truth phase``, only for a scan with a truth file
  (``cdiflow.physics.beamtime.truth_file``: ``truth/<scan name>.npz`` beside a
  synthetic beamtime): the truth of the phased frame, resampled to the result's pixels,
  aligned to the answer (twin, integer shift, global phase: ``cdiflow.metrics.align``),
  with the aligned errors (``cdiflow.metrics.aligned_errors`` of unit-energy copies)
  in the titles.

Object axes are in nm when the preprocessing record (``parameters``) says the geometry
(``real_pixel_nm``), else in pixels; nothing is assumed.
"""

from __future__ import annotations

import functools
import io
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from skimage.restoration import unwrap_phase

from cdiflow.beamtime.report import _figure
from cdiflow.beamtime.results import atomic_write_bytes

# Geometry keys read from the preprocessing record, top level or under "geometry"
# (units in the names; none of today's readers records them, so the axes say pixels).
GEOMETRY_KEYS = ("wavelength_m", "energy_kev", "distance_m", "pixel_m")
_HC_KEV_M = 1.2398419843320026e-9  # wavelength (m) x photon energy (keV)
UNMEASURED = "0.6"  # flat grey
_TICKS = 4


def _geometry(parameters: dict[str, Any]) -> dict[str, float]:
    found = {}
    for where in (parameters, parameters.get("geometry") or {}):
        if not isinstance(where, dict):
            continue
        for key in GEOMETRY_KEYS:
            value = where.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value) and value > 0:
                found[key] = float(value)
    return found


def real_pixel_nm(parameters: dict[str, Any]) -> float | None:
    """The result's real-space pixel, nm: lambda z / (crop x p), or None when not known.

    ``crop`` is the refinement pattern's width in detector pixels (``refine.crop`` of
    the record, = size x bin); lambda from ``wavelength_m`` or ``energy_kev``, z from
    ``distance_m``, the detector pixel p from ``pixel_m`` (``GEOMETRY_KEYS``).
    """
    geometry = _geometry(parameters)
    refine = parameters.get("refine") or {}
    crop = refine.get("crop") or parameters.get("crop")
    wavelength = geometry.get("wavelength_m")
    if wavelength is None and "energy_kev" in geometry:
        wavelength = _HC_KEV_M / geometry["energy_kev"]
    if not crop or wavelength is None or {"distance_m", "pixel_m"} - set(geometry):
        return None
    return wavelength * geometry["distance_m"] / (float(crop) * geometry["pixel_m"]) * 1e9


def _phased_pattern(row: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    modulus = np.asarray(row.get("refine_modulus"), np.float64)
    if modulus.ndim == 2 and modulus.shape[-1] > 1:
        return modulus, np.asarray(row["refine_mask"], bool)
    return np.asarray(row["modulus"], np.float64), np.asarray(row["mask"], bool)


def _unwrap(phase: np.ndarray, inside: np.ndarray) -> np.ndarray:
    if not inside.any():
        return np.full(phase.shape, np.nan)
    values = np.ma.filled(unwrap_phase(np.ma.masked_array(phase, mask=~inside)), np.nan)
    return values - np.round(np.nanmedian(values[inside]) / (2 * np.pi)) * 2 * np.pi


def _resample(obj: np.ndarray, factor: float, size: int) -> np.ndarray:
    """A centred complex (N, N) object at ``factor`` x its pixel density, ``size`` square
    (bilinear on the real and imaginary parts, centre pixel kept at the centre)."""
    from scipy.ndimage import map_coordinates

    n = obj.shape[-1]
    axis = (np.arange(size) - size // 2) / factor + n // 2
    grid = np.meshgrid(axis, axis, indexing="ij")
    parts = [map_coordinates(part, grid, order=1, cval=0.0) for part in (obj.real, obj.imag)]
    return parts[0] + 1j * parts[1]


def load_truth(row: dict[str, Any], parameters: dict[str, Any]) -> dict[str, Any] | None:
    """The scan's truth, aligned to its answer, or None when it has no truth file.

    Returns ``amplitude`` (scaled to the answer's maximum), ``phase`` (radians, unwrapped,
    NaN outside the truth's support: amplitude above 10% of its maximum), ``frame``
    (the rocking frame phased), ``amplitude_error`` and ``phase_rms`` (radians).
    """
    # lazy: torch (metrics) and the simulator's file rule; the report module stays light
    import torch

    from cdiflow.metrics import align, aligned_errors
    from cdiflow.physics.beamtime import truth_file

    path = truth_file(str(row.get("source", "")))
    if path is None:
        return None
    with np.load(path) as data:
        frames = data["amplitude"].shape[0]
        k = int(parameters.get("frame_index", data["central_frame"]))
        k = min(max(k, 0), frames - 1)
        truth = data["amplitude"][k] * np.exp(1j * data["phase"][k].astype(np.float64))
        fourier_pixels = int(data["fourier_pixels"])
    amplitude = np.asarray(row["amplitude"], np.float64)
    size = amplitude.shape[-1]
    crop = (parameters.get("refine") or {}).get("crop") or fourier_pixels
    truth = _resample(truth, float(crop) / fourier_pixels, size)
    answer = amplitude * np.exp(1j * np.asarray(row["phase"], np.float64))
    unit = [torch.from_numpy(x / max(np.linalg.norm(x), 1e-30)) for x in (answer, truth)]
    errors = aligned_errors(unit[0], unit[1])
    moved = align(unit[1], unit[0]).numpy()  # the truth, as the answer is placed
    magnitude = np.abs(moved)
    inside = magnitude > 0.1 * magnitude.max()
    return {
        "amplitude": magnitude * (amplitude.max() / max(magnitude.max(), 1e-30)),
        "phase": np.where(inside, _unwrap(np.angle(moved), inside), np.nan),
        "frame": k,
        "amplitude_error": float(errors["amplitude"]),
        "phase_rms": float(errors["phase_rms"]),
    }


def _limits(image: np.ndarray, percentiles=(0.0, 100.0)) -> tuple[float, float]:
    finite = np.isfinite(image)
    lo, hi = np.percentile(image[finite], percentiles) if finite.any() else (0.0, 1.0)
    return float(lo), float(hi)


@functools.cache
def _colours(cmap: str, bad: str):
    """The colormap ``cmap`` with ``bad`` for NaN, made once: ``matplotlib.colormaps[...]``
    deep-copies the map on every look-up (measured: 15% of a figure's time)."""
    import matplotlib

    return matplotlib.colormaps[cmap].with_extremes(bad=bad)


def _few_ticks(*axes) -> None:
    """At most ``_TICKS`` major ticks per axis: every tick is a line and a text artist
    made and laid out on each draw, the largest share of a figure's time."""
    from matplotlib.ticker import MaxNLocator

    for axis in axes:
        axis.set_major_locator(MaxNLocator(_TICKS))


def _image(fig, ax, image, cmap, label, extent, limits, bad="white"):
    lo, hi = limits
    shown = ax.imshow(
        np.ma.masked_invalid(image), cmap=_colours(cmap, bad), vmin=lo, vmax=hi,
        extent=extent, interpolation="nearest",
    )  # fmt: skip
    bar = fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label=label)
    _few_ticks(ax.xaxis, ax.yaxis, bar.ax.yaxis)


def _outline(ax, support: np.ndarray, coords: np.ndarray) -> None:
    if support.any() and not support.all():
        ax.contour(
            coords, coords, support.astype(float), levels=[0.5], colors="red", linewidths=0.8
        )


def _pattern_panel(fig, ax, row) -> None:
    modulus, mask = _phased_pattern(row)
    intensity = modulus**2
    positive = intensity[mask & (intensity > 0)]
    floor = max(float(positive.min()) if positive.size else 1e-9, 1e-9)
    log = np.where(mask, np.log10(np.maximum(intensity, floor)), np.nan)
    _image(fig, ax, log, "magma", "log10 intensity (max 1)", None, _limits(log), UNMEASURED)
    ax.set_title(f"pattern {modulus.shape[-1]}², grey: unmeasured", fontsize=9, y=1.0, pad=4)
    ax.set_xlabel("pixels")


def _chi2_panel(ax, row) -> None:
    best = np.asarray(row["chi2_curve"], np.float64)
    curves = np.asarray(row.get("start_chi2_curves", best[None]), np.float64).reshape(
        -1, best.shape[-1]
    )
    answer = int(row["answer_start"])
    others = [k for k, c in enumerate(curves) if k != answer and np.isfinite(c).any()]
    for k in others:
        ax.semilogy(
            curves[k], color="0.55", lw=0.8, label="other starts" if k == others[0] else None
        )
    ax.semilogy(best, color="red", lw=1.6, label=f"answer (start {answer})")
    _log_ticks(ax)
    ax.set_xlabel("iteration")
    ax.set_ylabel("chi²")
    ax.set_title(f"chi² of {len(curves)} start(s)", fontsize=9, y=1.0, pad=4)
    ax.legend(fontsize=7, loc="upper right")  # "best" scans every line point: slow


def _log_ticks(ax) -> None:
    """Decades only on the log axis, labelled as plain text: the default minor ticks
    and mathtext labels cost more than the rest of the panel."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullLocator

    ax.yaxis.set_major_locator(LogLocator(numticks=_TICKS))
    ax.yaxis.set_minor_locator(NullLocator())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:.0e}"))
    _few_ticks(ax.xaxis)


def _object_axes(size: int, parameters: dict[str, Any]):
    """(pixel centres, imshow extent, unit) of a centred ``size``-pixel object image."""
    pixel = real_pixel_nm(parameters)
    step = pixel or 1.0
    coords = (np.arange(size) - size // 2) * step
    lo, hi = coords[0] - step / 2, coords[-1] + step / 2
    return coords, (lo, hi, hi, lo), "nm" if pixel else "pixels"


def _object_images(row, phase_unwrapped, truth) -> list[tuple]:
    """(title, image, colormap, colour-bar label, limits) of the object panels: the
    answer's, then the truth's on the answer's colour scales (its phase moved by whole
    turns to the answer's median)."""
    amplitude = np.asarray(row["amplitude"], np.float64)
    phase = np.asarray(phase_unwrapped, np.float64)
    scales = (_limits(amplitude), _limits(phase, (2.0, 98.0)))
    images = [
        ("amplitude", amplitude, "gray", "a.u.", scales[0]),
        ("phase", phase, "viridis", "rad", scales[1]),
    ]
    if truth:
        turns = 0.0
        if np.isfinite(phase).any() and np.isfinite(truth["phase"]).any():
            turns = np.round((np.nanmedian(truth["phase"]) - np.nanmedian(phase)) / (2 * np.pi))
        images += [
            (f"truth amplitude (aligned), error {truth['amplitude_error']:.3g}",
             truth["amplitude"], "gray", "a.u.", scales[0]),
            (f"truth phase (aligned), rms {truth['phase_rms']:.2f} rad",
             truth["phase"] - turns * 2 * np.pi, "viridis", "rad", scales[1]),
        ]  # fmt: skip
    return images


def draw_scan(row: dict[str, Any], phase_unwrapped: np.ndarray):
    """The figure of one finished scan row (module docstring); returns (figure, panels).

    ``panels`` names the data panels drawn, in order of their axes: ``pattern``,
    ``amplitude``, ``phase``, ``chi2``, and with a truth ``truth amplitude`` and
    ``truth phase`` (a 2 x 3 grid; 2 x 2 without).
    """
    parameters = json.loads(row.get("parameters") or "{}")
    try:
        truth = load_truth(row, parameters)
    except (OSError, KeyError, ValueError) as exc:  # a bad truth file never fails the scan
        message = f"{row.get('scan')}: truth file unreadable ({exc}); no truth panels"
        warnings.warn(message, stacklevel=2)
        truth = None
    columns = 3 if truth else 2
    fig = _figure(4.0 * columns, 6.6)
    axes = fig.subplots(2, columns).ravel()
    support = np.asarray(row["support"], bool)
    coords, extent, unit = _object_axes(support.shape[-1], parameters)
    _pattern_panel(fig, axes[0], row)
    places = [1, 2, 4, 5] if truth else [1, 2]
    images = _object_images(row, phase_unwrapped, truth)
    for place, (title, image, cmap, label, limits) in zip(places, images, strict=True):
        ax = axes[place]
        _image(fig, ax, image, cmap, label, extent, limits)
        _outline(ax, support, coords)
        ax.set_title(title, fontsize=9, y=1.0, pad=4)
        ax.set_xlabel(unit)
    _chi2_panel(axes[3], row)
    panels = ["pattern", "amplitude", "phase", "chi2"]
    if truth:
        panels += ["truth amplitude", "truth phase"]
    verdict = str(row.get("verdict") or "")
    title = f"{row['scan']}   chi² {float(row['refined_chi2']):.3g}   {verdict}"
    fig.suptitle(title, fontsize=10)
    # fixed margins: tight_layout measured every label first, 40% of the figure's time
    fig.subplots_adjust(left=0.08, right=0.9, bottom=0.08, top=0.9, wspace=0.75, hspace=0.35)
    return fig, panels


def save_preview(path: str | Path, row: dict[str, Any], phase_unwrapped: np.ndarray) -> list[str]:
    """Write the figure of ``row`` (``draw_scan``) as a PNG at ``path``; return its panels."""
    fig, panels = draw_scan(row, phase_unwrapped)
    buffer = io.BytesIO()
    # zlib level 1: a tenth of the encoder's time at the default level, files ~30% larger
    fig.savefig(buffer, format="png", pil_kwargs={"compress_level": 1})
    atomic_write_bytes(Path(path), buffer.getvalue())
    return panels
