"""The CNN as a reconstructor: one forward pass, amplitude and phase of the object box."""

from __future__ import annotations

import torch
from torch import nn

from cdiflow.errors import InputError
from cdiflow.models.cnn import inference_batch
from cdiflow.models.symmetry import SymmetryAveraged
from cdiflow.physics.farfield import FarField
from cdiflow.reconstruction import SUPPORT_THRESHOLD, Reconstruction


class CNNReconstructor:
    """``reconstruct(modulus, mask, physics)`` with a trained ``PhaseRetrievalCNN``.

    Parameters
    ----------
    model : the network (any module mapping (B, P, P) moduli to (B, 2, N, N) amplitude and
        phase target); it is put in eval mode and run under ``torch.inference_mode``.
    device : where to run (default: where the model's parameters are).
    batch_size : patterns per forward pass (default: ``inference_batch`` of the device).
    threshold : support = amplitude above this fraction of its maximum.
    symmetry : ask the network about this many of the pattern's flips and transposes and
        average its answers (``cdiflow.models.symmetry``; 1: the plain network, 8: all of
        them, at 8x the time).
    """

    def __init__(
        self,
        model: nn.Module,
        device: str | torch.device | None = None,
        batch_size: int | None = None,
        threshold: float = SUPPORT_THRESHOLD,
        symmetry: int = 1,
    ):
        if symmetry != 1:
            model = SymmetryAveraged(model, symmetry)
        self.model = model.eval()
        self.device = torch.device(device) if device else next(model.parameters()).device
        self.model.to(self.device)
        self.batch_size = batch_size or inference_batch(self.device)
        self.threshold = threshold

    def predict(self, modulus, mask=None) -> torch.Tensor:
        """(B, P, P) moduli -> (B, 2, N, N) float32 CPU output (amplitude, phase target).

        ``mask`` ((P, P) or (B, P, P) bool, True where measured) reaches a model that has
        a mask channel; other models see only the modulus.
        """
        x = torch.as_tensor(modulus, dtype=torch.float32)
        m = None if mask is None else torch.as_tensor(mask, dtype=torch.bool).expand(x.shape)
        outputs = []
        with torch.inference_mode():
            for start in range(0, x.shape[0], self.batch_size):
                rows = slice(start, start + self.batch_size)
                inputs = [x[rows].to(self.device)]
                if m is not None:  # models without a mask channel ignore it
                    inputs.append(m[rows].to(self.device))
                outputs.append(self.model(*inputs).float().cpu())
        if not outputs:
            raise InputError("no patterns to reconstruct")
        return torch.cat(outputs)

    def reconstruct(self, modulus, mask, physics: FarField) -> Reconstruction:
        """One forward pass; chi^2 of the prediction's |F| against ``modulus`` (scale fitted)."""
        modulus = torch.as_tensor(modulus, dtype=torch.float32)
        if modulus.shape[-1] != physics.pattern_size:
            raise InputError(
                f"the CNN takes {physics.pattern_size} x {physics.pattern_size} patterns, "
                f"got {tuple(modulus.shape[-2:])}"
            )
        out = self.predict(modulus, mask)
        if out.shape[-1] != physics.object_size:
            raise InputError(f"the CNN predicts {out.shape[-1]} pixels, not {physics.object_size}")
        mask = None if mask is None else torch.as_tensor(mask, dtype=torch.bool)
        predicted = physics.modulus_of_targets(out[:, 0], out[:, 1])
        chi2 = physics.chi2(predicted, modulus, mask, fit_scale=True)
        return Reconstruction.from_targets(out[:, 0], out[:, 1], chi2, self.threshold)
