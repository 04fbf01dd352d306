"""A sample's oversampling set by magnifying its projected object (the realistic preset).

The linear oversampling of a pattern is P / w for an object w pixels wide in a P-pixel
field. The paper's particles (semi-axes 4 to 8 voxels in the N = 32 box) are 8 to 16
pixels wide, so their patterns are oversampled 4 to 8 times; measured scans are often
nearer 2. Generating larger particles would need a larger 3D box (8x the cost at N = 64,
since a rotated particle must fit in every direction). Magnifying the 2D projection
instead gives the same thing for a fraction of the cost: the projection of a particle
z times larger is the projection magnified z times (its edges and phase structure
scale with it), so each sample is resampled about the box centre to the width that
gives its drawn oversampling, as far as the box allows (down to about 2.4 at N = 32,
P = 64).
"""

from __future__ import annotations

import numpy as np
import torch

# pixels kept free at the box edge after magnification (the edge smoothing's tail)
MARGIN = 2


def object_extent(projection: torch.Tensor, threshold: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(width, reach), each (B,) pixels, of |projection| > threshold * max: the larger
    bounding-box side, and the farthest such pixel from the centre pixel N // 2 along
    either axis (what a magnification about the centre must keep inside the box)."""
    magnitude = projection.abs()
    inside = magnitude > threshold * magnitude.amax(dim=(-2, -1), keepdim=True)
    size = inside.shape[-1]
    index = torch.arange(size, dtype=torch.float32)
    widths, reaches = [], []
    for dim in (-1, -2):  # rows: any pixel in a column; columns: any in a row
        occupied = inside.any(dim=dim)
        first = torch.where(occupied, index, float(size)).amin(-1)
        last = torch.where(occupied, index, -1.0).amax(-1)
        widths.append((last - first + 1).clamp_min(1.0))
        reaches.append(torch.maximum(size // 2 - first, last - size // 2).clamp_min(1.0))
    return torch.maximum(*widths), torch.maximum(*reaches)


def magnification(
    width: torch.Tensor,
    reach: torch.Tensor,
    oversampling: torch.Tensor,
    pattern_size: int,
    object_size: int,
) -> torch.Tensor:
    """(B,) factors that make objects ``width`` wide oversampled ``oversampling`` times
    in a ``pattern_size`` field, capped so that no pixel within ``reach`` of the centre
    leaves the ``object_size`` box (``MARGIN`` pixels kept free at its edge). The
    reach counts one pixel more: the tail just below the threshold grows with the rest."""
    wanted = pattern_size / oversampling / width
    return torch.minimum(wanted, (object_size // 2 - MARGIN) / (reach + 1))


def magnify(projection: torch.Tensor, factors: torch.Tensor) -> torch.Tensor:
    """(B, N, N) complex objects magnified by ``factors`` (B,) about the centre pixel N // 2
    (``cdiflow.physics.fft``'s centre), bilinear, zero outside the box."""
    batch, size = projection.shape[0], projection.shape[-1]
    centre = size // 2
    pixels = torch.arange(size, dtype=torch.float32)
    # the source pixel each output pixel reads: c + (u - c) / z, normalised to [-1, 1]
    source = centre + (pixels[None, :] - centre) / factors[:, None].float()
    normalised = 2 * source / (size - 1) - 1  # align_corners=True: pixel centres at +-1
    grid = torch.stack(
        [
            normalised[:, None, :].expand(batch, size, size),  # x: the column
            normalised[:, :, None].expand(batch, size, size),  # y: the row
        ],
        dim=-1,
    )
    planes = torch.view_as_real(projection).permute(0, 3, 1, 2).contiguous()
    out = torch.nn.functional.grid_sample(
        planes, grid, mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return torch.view_as_complex(out.permute(0, 2, 3, 1).contiguous())


def to_oversampling(
    projection: torch.Tensor, oversampling, pattern_size: int, threshold: float
) -> torch.Tensor:
    """Each (N, N) projection magnified so its pattern is oversampled ``oversampling``
    times (B,), or as near as the box allows (``magnification``)."""
    targets = torch.as_tensor(np.asarray(oversampling, dtype=np.float32))
    width, reach = object_extent(projection, threshold)
    factors = magnification(width, reach, targets, pattern_size, projection.shape[-1])
    return magnify(projection, factors)
