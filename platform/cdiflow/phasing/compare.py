"""The paper's comparison of refinement starts (Fig. 5f, Fig. 6), as a library function.

``compare_starts`` refines one pattern from each of the four starts of Fig. 5(f): the two
random-phase starts ``repeats`` times (one batch each, different random phases), the CNN
and NNS starts once. It returns chi^2 against iteration for every run, the final chi^2,
and the image errors after removing the global-phase / shift / twin ambiguities
(``cdiflow.metrics.aligned_errors``), plus snapshots of the first run of each start for
the Fig. 6 panel. It takes arrays, not a model: the CNN prediction arrives as
(amplitude, phase target), from any ``predict(modulus) -> (amplitude, phase_target)``.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from cdiflow import OBJECT_SIZE
from cdiflow.metrics import aligned_errors
from cdiflow.phasing.refine import PAPER_SHRINKWRAP, refine
from cdiflow.phasing.schedule import PAPER_SCHEDULE, Schedule, as_schedule
from cdiflow.phasing.shrinkwrap import ShrinkWrap
from cdiflow.phasing.starts import (
    DEFAULT_THRESHOLD,
    Start,
    cnn_start,
    nns_start,
    random_phase_cnn_support,
    random_phase_rectangle,
    torch_generator,
)
from cdiflow.physics.farfield import object_from_targets
from cdiflow.physics.fft import crop_centre

FIG6_ITERATIONS = (20, 100, 600)
"""Iterations shown in the Fig. 6-style panel (the paper's columns are not numbered)."""


@dataclasses.dataclass(frozen=True)
class StartRun:
    """Refinement runs from one kind of start.

    Attributes
    ----------
    name : start kind ("random-rectangle", "random-cnn-support", "cnn", "nns").
    chi2 : (R, n_iter) float32 chi^2 per iteration of each run.
    best_chi2 : (R,) float32.
    amplitude_error, phase_rms : (R,) float image errors after alignment.
    snapshots : {iteration: (N, N) complex64} the first run's object at those iterations.
    """

    name: str
    chi2: np.ndarray
    best_chi2: np.ndarray
    amplitude_error: np.ndarray
    phase_rms: np.ndarray
    snapshots: dict

    def summary(self) -> dict:
        """One table row: mean and std of final chi^2 and of the image errors."""
        return {
            "start": self.name,
            "runs": int(len(self.best_chi2)),
            "final_chi2_mean": float(np.mean(self.best_chi2)),
            "final_chi2_std": float(np.std(self.best_chi2)),
            "amplitude_error_mean": float(np.mean(self.amplitude_error)),
            "phase_rms_mean": float(np.mean(self.phase_rms)),
        }


def truth_object(amplitude, phase_target) -> torch.Tensor:
    """(..., N, N) complex64 object from amplitude and phase target p (phi = 2 pi p - pi)."""
    amp = torch.as_tensor(amplitude, dtype=torch.float32)
    return object_from_targets(amp, torch.as_tensor(phase_target, dtype=torch.float32))


def image_errors(obj: torch.Tensor, truth: torch.Tensor) -> dict[str, torch.Tensor]:
    """Image errors of refined objects after alignment (``metrics.aligned_errors``).

    Parameters
    ----------
    obj : (B, P, P) complex, centred refined objects (any scale).
    truth : (B, N, N) complex truth (``truth_object``).

    Returns
    -------
    {"amplitude": (B,), "phase_rms": (B,)}: the central N x N box, scaled to a maximum
    amplitude of 1, against the truth.
    """
    box = crop_centre(obj, truth.shape[-1])
    box = box / box.abs().amax((-2, -1), keepdim=True).clamp_min(1e-12)
    return aligned_errors(box, truth)


def _run(modulus, start: Start, truth, schedule, shrinkwrap, device, snapshots) -> StartRun:
    batch = len(start)
    moduli = torch.as_tensor(modulus, dtype=torch.float32).expand(batch, *modulus.shape[-2:])
    res = refine(moduli, start, schedule, shrinkwrap=shrinkwrap, device=device, snapshots=snapshots)
    errors = image_errors(res.obj, truth.expand(batch, *truth.shape[-2:]))
    return StartRun(
        name=start.name,
        chi2=res.chi2.numpy(),
        best_chi2=res.best_chi2.numpy(),
        amplitude_error=errors["amplitude"].numpy(),
        phase_rms=errors["phase_rms"].numpy(),
        snapshots={k: crop_centre(v[0], OBJECT_SIZE) for k, v in res.snapshots.items()},
    )


def compare_starts(
    modulus,
    truth_amplitude,
    truth_phase,
    predicted: tuple | None = None,
    nearest: tuple | None = None,
    repeats: int = 300,
    rng: int | torch.Generator = 0,
    schedule: Schedule | str = PAPER_SCHEDULE,
    shrinkwrap: ShrinkWrap | None = PAPER_SHRINKWRAP,
    threshold: float = DEFAULT_THRESHOLD,
    snapshots: tuple[int, ...] = FIG6_ITERATIONS,
    device=None,
) -> dict[str, StartRun]:
    """Refine one pattern from the four starts of Fig. 5(f).

    Parameters
    ----------
    modulus : (P, P) centred measured modulus.
    truth_amplitude, truth_phase : (N, N) ground truth amplitude and phase target.
    predicted : optional CNN (amplitude, phase target), each (N, N): starts (ii) and (iii).
    nearest : optional NNS match (amplitude, phase target), each (N, N): start (iv).
    repeats : runs of each random start (paper: 300).
    rng : seed or torch.Generator for the random phases.

    Returns
    -------
    {start name: StartRun}, in the order (i), (ii), (iii), (iv) of those available.
    """
    schedule = as_schedule(schedule)
    g = torch_generator(rng)
    truth = truth_object(truth_amplitude, truth_phase)
    starts = [random_phase_rectangle(repeats, g)]
    if predicted is not None:
        amp, phase = (np.asarray(a, dtype=np.float32)[None] for a in predicted)
        starts.append(random_phase_cnn_support(np.repeat(amp, repeats, 0), g, threshold))
        starts.append(cnn_start(amp, phase, threshold))
    if nearest is not None:
        amp, phase = (np.asarray(a, dtype=np.float32)[None] for a in nearest)
        starts.append(nns_start(amp, phase, threshold))
    modulus = torch.as_tensor(modulus, dtype=torch.float32)
    return {
        s.name: _run(modulus, s, truth, schedule, shrinkwrap, device, snapshots) for s in starts
    }
