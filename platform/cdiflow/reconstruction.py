"""One call for every reconstructor: ``reconstruct(modulus, mask, physics) -> Reconstruction``.

As deepinv's ``Reconstructor.forward(y, physics)``: the CNN
(``cdiflow.models.reconstructor.CNNReconstructor``), nearest-neighbour search
(``cdiflow.phasing.nns.NNSReconstructor``) and the iterative engine
(``cdiflow.phasing.refine.IterativeReconstructor``) all answer it, so evaluation, the
comparisons and the beamtime job score them through one path (``score``).

Shapes: a batch of B centred moduli (B, P, P), an optional mask of measured pixels
(B, P, P) or (P, P) bool, and a ``cdiflow.physics.farfield.FarField`` that says P and the
object box N. A ``Reconstruction`` holds (B, N, N) amplitude, phase in radians and
support, and the chi^2 curve (B, T): T = 1 for one-shot reconstructors, the iterations
for the engine.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, runtime_checkable

import torch

from cdiflow.physics.farfield import FarField, target_to_phase

SUPPORT_THRESHOLD = 0.1
"""A support is the amplitude above this fraction of its maximum (starts, CNN, NNS)."""


@dataclasses.dataclass(frozen=True)
class Reconstruction:
    """What every reconstructor returns; tensors on the CPU, batch first.

    Attributes
    ----------
    amplitude : (B, N, N) float32, max-normalised per pattern where it is not all zero.
    phase : (B, N, N) float32 radians in (-pi, pi].
    support : (B, N, N) bool.
    chi2 : (B, T) float32, chi^2 (eq. 5) of each step; ``chi2[:, -1]`` is the answer's.
    """

    amplitude: torch.Tensor
    phase: torch.Tensor
    support: torch.Tensor
    chi2: torch.Tensor

    @property
    def final_chi2(self) -> torch.Tensor:
        """(B,) chi^2 of the answer."""
        return self.chi2[:, -1]

    @property
    def object(self) -> torch.Tensor:
        """(B, N, N) complex64 object A exp(i phi)."""
        return torch.polar(self.amplitude, self.phase)

    def __len__(self) -> int:
        return self.amplitude.shape[0]

    @classmethod
    def from_targets(
        cls, amplitude, phase_target, chi2, threshold: float = SUPPORT_THRESHOLD
    ) -> Reconstruction:
        """From a CNN-style output: amplitude and phase target p (phi = 2 pi p - pi)."""
        amplitude = torch.as_tensor(amplitude, dtype=torch.float32).cpu()
        phase = target_to_phase(torch.as_tensor(phase_target, dtype=torch.float32).cpu())
        return cls(amplitude, phase, support_of(amplitude, threshold), _curve(chi2))

    @classmethod
    def from_object(cls, obj, support, chi2_curve) -> Reconstruction:
        """From a complex (B, N, N) object: amplitude max-normalised, phase its angle."""
        amp = obj.abs()
        amp = amp / amp.amax((-2, -1), keepdim=True).clamp_min(1e-12)
        return cls(amp.float(), obj.angle().float(), support.bool(), _curve(chi2_curve))


def support_of(amplitude: torch.Tensor, threshold: float) -> torch.Tensor:
    """(B, N, N) bool: amplitude above ``threshold`` times each pattern's maximum."""
    peak = amplitude.amax((-2, -1), keepdim=True)
    return (amplitude > threshold * peak) & (peak > 0)


def _curve(chi2) -> torch.Tensor:
    c = torch.as_tensor(chi2, dtype=torch.float32).cpu()
    return c[:, None] if c.ndim == 1 else c


@runtime_checkable
class Reconstructor(Protocol):
    """Anything that turns measured moduli into objects."""

    def reconstruct(
        self, modulus: torch.Tensor, mask: torch.Tensor | None, physics: FarField
    ) -> Reconstruction:
        """Reconstruct a batch of (B, P, P) centred moduli."""
        ...


def modulus_chi2(
    reconstruction: Reconstruction, modulus: torch.Tensor, mask, physics: FarField
) -> torch.Tensor:
    """(B,) chi^2 of a reconstruction against the measurement, scale fitted.

    The one way any answer is scored against data: the object's |F| (``physics``) against
    ``modulus`` over the measured pixels, with the least-squares scale fitted because the
    reconstructions and the moduli are normalised independently.
    """
    predicted = physics.modulus(reconstruction.object)
    measured = torch.as_tensor(modulus, dtype=torch.float32)
    mask = None if mask is None else torch.as_tensor(mask, dtype=torch.bool)
    return physics.chi2(predicted, measured, mask, fit_scale=True)
