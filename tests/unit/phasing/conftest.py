"""Fixtures for the phasing tests: small synthetic objects and their exact patterns."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def synthetic_objects(batch: int, seed: int = 0, size: int = 32) -> torch.Tensor:
    """(B, size, size) complex128 blobs: random ellipses with a smooth phase ramp + bump."""
    g = torch.Generator().manual_seed(seed)
    r = torch.arange(size, dtype=torch.float64) - size // 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    out = []
    for _ in range(batch):
        a, b = (6 + 6 * torch.rand(2, generator=g, dtype=torch.float64)).tolist()
        cy, cx = (2 * torch.rand(2, generator=g, dtype=torch.float64) - 1).tolist()
        amp = (((yy - cy) / a) ** 2 + ((xx - cx) / b) ** 2 < 1).double()
        ky, kx, c = (torch.rand(3, generator=g, dtype=torch.float64) - 0.5).tolist()
        phase = 0.3 * (ky * yy + kx * xx) + 2.0 * c * torch.exp(-(yy**2 + xx**2) / 40)
        out.append(amp * torch.exp(1j * phase))
    return torch.stack(out)


@pytest.fixture
def exact_batch():
    """(objects in the 64 field, centred normalised moduli), complex128/float64, B=6."""
    from cdiflow.physics.fft import centred_fft2, normalise_modulus, pad_centre

    obj = pad_centre(synthetic_objects(6), 64)
    return obj, normalise_modulus(centred_fft2(obj).abs())
