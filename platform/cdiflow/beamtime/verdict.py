"""Many starts, one answer: how far to trust a scan's reconstruction (no Ray here).

Each scan is refined from S starts (``ReconstructConfig.starts``); the run of least chi^2
is the answer. The runs together give three measurements, and from them a verdict:

- **consensus error**: the mean pairwise error among the best ``top`` runs by chi^2
  (``min(VerdictConfig.top, S)``) of the complex objects, each scaled to unit energy
  and aligned with ``cdiflow.metrics.align`` (global phase, integer shift and twin
  removed): ``e(a, b) = ||align(a, b) - b||^2 / ||b||^2``, in [0, 2]. 0 means the runs
  found one object; two unrelated objects score near 2. This one complex-object error
  is used rather than amplitude error + phase rms: it weights each pixel's phase by its
  amplitude, so the faint edge pixels, whose phase is noise, do not dominate, and it is
  symmetric in (a, b) and bounded.
- **support fraction**: pixels of the best run's answer's support (the final support:
  ``phasing.runner`` chooses the answer within it, or the start's) over pixels of the
  square upper-bound support. Shrink-wrap on data without a compact object (noise)
  keeps the whole upper bound.
- **chi^2 converged**: the relative drop of the best run's running-best chi^2 over its
  last ``window`` of iterations, ``(best before the window - final best) / final best``,
  is below ``tol``, or the final chi^2 is below ``converged_chi2``. The running best is
  taken over support-consistent iterates (those an ER step made, the start, the final
  projection: the ones ``refine`` may return), not the raw curve: an HIO iterate has
  mass outside the support and its chi^2 jumps at every HIO/ER switch, so a raw
  relative change would never fall below 1 %. The floor is there because on noise-free
  data chi^2 keeps falling (by up to tens of percent per HIO/ER cycle around 1e-4 on
  clean synthetic patterns): a relative test alone would flag the best-fitting scans,
  while measured data plateau at their noise level, above 1e-3 (scan 54: about 2e-3),
  where the relative test decides.

The verdict is ``"ok"`` or ``"suspect: <reason>[; <reason>...]"`` with the reasons of
``REASONS``; a failed scan gets ``"failed"``. "starts failed": fewer than two of S >= 2
runs finished, so there is no consensus to judge. "too few photons" compares the
pattern's total counts before normalisation (``pattern_counts``, which the preprocessing
keeps) with ``min_photons``; a scan stored already normalised (maximum 1) never gets
that far: its peak is below ``PreprocessConfig.min_peak_counts`` and it fails.
"""

from __future__ import annotations

import dataclasses
import itertools
import math

import numpy as np
import torch

from cdiflow.config import Config, require
from cdiflow.metrics import align

_DIMS2 = (-2, -1)

REASONS = {
    "support": "support fills the upper bound",
    "consensus": "starts disagree",
    "converged": "chi^2 did not converge",
    "photons": "too few photons",
    "finished": "starts failed",
}


@dataclasses.dataclass(frozen=True)
class VerdictConfig(Config):
    """Thresholds of the verdict (module docstring); logged whole with every scan.

    The defaults were set on measurements with the default schedule (600 ER/HIO), four
    starts and an untrained CNN (so its support is the whole 32 x 32 box: the hardest
    start): generator particles (default ``GeneratorConfig``, seed 0), noise-free and
    with Poisson noise at 1e4 / 1e5 / 1e6 total counts, four synthetic 34-ID-C scans,
    and noise images (uniform and Poisson, no object).

    top : runs compared for the consensus (the best ``min(top, S)`` by chi^2).
    max_consensus_error : above it, "starts disagree". Runs that found the same
        particle scored 0.02-0.22 (noise-free particles, synthetic scans), 0.05-0.47 at
        1e5-1e6 counts; noise images 1.7 (unrelated objects). 0.3 (an energy-normalised
        overlap of 0.85) flags the runs that found visibly different objects.
    max_support_fraction : above it, "support fills the upper bound". Particles filled
        0.10-0.27 of their upper bound, noise images 0.86-1.0; 0.9 flags only a support
        that shrink-wrap could not shrink at all.
    window : fraction of the iterations over which convergence is judged (last 10 %).
    tol : relative drop of the running-best chi^2 over the window below which chi^2 has
        converged (1 %).
    converged_chi2 : a final chi^2 below this counts as converged whatever its drop
        (1e-3: the modulus fit to about 3 % rms; see the module docstring).
    min_photons : total counts of the pattern before normalisation below which it has
        "too few photons". At 1e4 counts no particle of three reconstructed
        reproducibly (consensus 0.56-0.81), at 1e5 two of three did: 3e4 sits between.
        The counts are those of the data as stored (34-ID-C: dark- and flat-corrected
        detector counts); 0 disables the check.
    """

    top: int = 3
    max_consensus_error: float = 0.3
    max_support_fraction: float = 0.9
    window: float = 0.1
    tol: float = 0.01
    converged_chi2: float = 1.0e-3
    min_photons: float = 3.0e4

    def validate(self) -> None:
        require(self.top >= 2, f"verdict.top must be >= 2, got {self.top}")
        require(self.max_consensus_error > 0, "verdict.max_consensus_error must be > 0")
        require(0 < self.max_support_fraction <= 1, "verdict.max_support_fraction in (0, 1]")
        require(0 < self.window <= 1, f"verdict.window must be in (0, 1], got {self.window}")
        require(self.tol > 0, f"verdict.tol must be > 0, got {self.tol}")
        require(self.converged_chi2 >= 0, "verdict.converged_chi2 must be >= 0")
        require(self.min_photons >= 0, "verdict.min_photons must be >= 0")


def object_error(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Complex-object error ``||align(a, b) - b||^2 / ||b||^2`` of unit-energy copies.

    Parameters
    ----------
    a, b : (..., P, P) complex tensors, centred.

    Returns
    -------
    (...) float tensor in [0, 2]: 0 for the same object up to a global phase, an integer
    shift and the twin (``cdiflow.metrics.align``).
    """
    a, b = _unit(a), _unit(b)
    return ((align(a, b) - b).abs() ** 2).sum(_DIMS2).real


def _unit(x: torch.Tensor) -> torch.Tensor:
    x = x.to(torch.complex128)
    norm = (x.abs() ** 2).sum(_DIMS2, keepdim=True).sqrt()
    return x / norm.clamp_min(1e-30)


def consensus_error(objects, chi2, top: int = 3) -> float:
    """Mean pairwise ``object_error`` among the ``min(top, S)`` runs of least chi^2.

    Parameters
    ----------
    objects : (S, P, P) complex, centred: the runs of one scan.
    chi2 : (S,) final chi^2 of each run (NaN: a failed run, left out).

    Returns
    -------
    float; NaN when fewer than two runs are usable (S = 1: nothing to compare).
    """
    objects = torch.as_tensor(objects)
    chi2 = np.asarray(chi2, np.float64)
    usable = [i for i in np.argsort(chi2, kind="stable") if np.isfinite(chi2[i])]
    best = usable[:top]
    if len(best) < 2:
        return float("nan")
    pairs = list(itertools.combinations(best, 2))
    a = torch.stack([objects[i] for i, _ in pairs])
    b = torch.stack([objects[j] for _, j in pairs])
    return float(object_error(a, b).mean())


def support_fraction(support, upper_bound_pixels: int) -> float:
    """Pixels of ``support`` (any shape, bool) over ``upper_bound_pixels``."""
    return float(np.count_nonzero(np.asarray(support))) / max(int(upper_bound_pixels), 1)


def chi2_change(curve, algorithms: tuple[str, ...], final_best: float, window: float) -> float:
    """Relative drop of the running-best support-consistent chi^2 over the last ``window``.

    Parameters
    ----------
    curve : (n_iter,) chi^2 of the iterate entering each iteration (``refine``).
    algorithms : the expanded schedule (one name per iteration).
    final_best : the chi^2 of the returned object (``RefineResult.best_chi2``).
    window : fraction of the iterations, e.g. 0.1.

    Returns
    -------
    ``(running best before the window - final_best) / final_best`` (>= 0); inf when
    nothing is known before the window, NaN for a failed run.
    """
    curve = np.asarray(curve, np.float64)
    n = len(curve)
    valid = np.array([k == 0 or algorithms[k - 1] == "ER" for k in range(n)], bool)
    running = np.minimum.accumulate(np.where(valid & np.isfinite(curve), curve, np.inf))
    start = n - max(1, math.ceil(window * n))
    before = running[start - 1] if start >= 1 else math.inf
    if not math.isfinite(final_best):
        return float("nan")
    if not math.isfinite(before):
        return math.inf
    return max(0.0, float(before - final_best)) / max(final_best, 1e-30)


def verdict(
    config: VerdictConfig,
    consensus: float,
    fraction: float,
    converged: bool,
    photons: float | None,
    finished: int = 2,
    starts: int = 2,
) -> str:
    """``"ok"`` or ``"suspect: reason; reason"`` (``REASONS``, in that order).

    A NaN consensus (one start) and an unknown photon count (None) give no reason;
    ``finished`` of ``starts`` runs ended without error.
    """
    reasons = []
    if fraction > config.max_support_fraction:
        reasons.append(REASONS["support"])
    if math.isfinite(consensus) and consensus > config.max_consensus_error:
        reasons.append(REASONS["consensus"])
    if starts >= 2 and finished < 2:
        reasons.append(REASONS["finished"])
    if not converged:
        reasons.append(REASONS["converged"])
    if photons is not None and photons < config.min_photons:
        reasons.append(REASONS["photons"])
    return "suspect: " + "; ".join(reasons) if reasons else "ok"


def assess(runs: dict, best: int, upper_bound_pixels: int, photons, config, algorithms) -> dict:
    """The verdict columns of one scan from its runs (what ``refine_batch`` records).

    Parameters
    ----------
    runs : ``obj`` (S, P, P) complex, ``chi2`` (S,) final chi^2 (NaN: failed run),
        ``curve`` (S, n_iter) chi^2 per iteration, ``support`` (S, P, P) bool.
    best : index of the answer (least chi^2) among the S runs.
    upper_bound_pixels : pixels of the scan's upper-bound support.
    photons : total counts before normalisation, or None when unknown.
    config : ``VerdictConfig``; algorithms : the expanded schedule.

    Returns
    -------
    {"starts", "consensus_error", "support_fraction", "chi2_converged", "verdict"}.
    """
    chi2 = np.asarray(runs["chi2"], np.float64)
    final = float(chi2[best])
    change = chi2_change(runs["curve"][best], algorithms, final, config.window)
    converged = bool(change < config.tol or final < config.converged_chi2)
    consensus = consensus_error(runs["obj"], chi2, config.top)
    fraction = support_fraction(runs["support"][best], upper_bound_pixels)
    finished = int(np.isfinite(chi2).sum())
    return {
        "starts": finished,
        "consensus_error": consensus,
        "support_fraction": fraction,
        "chi2_converged": converged,
        "verdict": verdict(config, consensus, fraction, converged, photons, finished, len(chi2)),
    }
