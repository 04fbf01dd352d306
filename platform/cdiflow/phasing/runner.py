"""The batched phasing runner: B patterns at once, one torch implementation (CPU or GPU).

``run_phasing`` iterates a schedule of projections (``cdiflow.phasing.projections``)
with shrink-wrap (``cdiflow.phasing.shrinkwrap``) over a batch. Inputs and outputs are
centred (``cdiflow.physics.fft``). Inside the loop every array is kept in the
*unshifted* FFT layout (``ifftshift`` once on entry, ``fftshift`` once on exit): each
update is pixel-wise and the support blur is a circular convolution, so nothing changes
but the four ``fftshift`` calls per iteration that the centred convention would cost.
The transforms are the ortho-normalised FFTs of ``centred_fft2`` / ``centred_ifft2``.

chi^2 (paper eq. 5, ``cdiflow.metrics.chi2`` without scale fitting) of the iterate is
recorded every iteration from the Fourier magnitudes the modulus projection computes
anyway, so it costs no extra transform. For HIO/RAAR iterates that have mass outside the
support this is the error of the iterate itself (as cohere-core reports it). The best
iterate is kept among the iterates that satisfy the support (those an ER step made, the
start, and the final support projection), so the kept object is always a valid one.

Input validation is the caller's job (``cdiflow.phasing.refine`` does it per pattern);
the runner isolates support collapse per pattern: a collapsed pattern keeps its last
support, is flagged in ``collapsed``, and the others go on.
"""

from __future__ import annotations

import dataclasses

import torch

from cdiflow.phasing.projections import COEFFICIENTS, apply, magnitude
from cdiflow.phasing.schedule import Schedule, as_schedule
from cdiflow.phasing.shrinkwrap import ShrinkWrap, gaussian_transfer, shrink_wrap

_DIMS2 = (-2, -1)
_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class PhasingResult:
    """What ``run_phasing`` returns; every tensor has the batch as its first axis.

    Attributes
    ----------
    obj : (B, P, P) complex, centred: the final iterate projected onto the final support.
    best_obj : (B, P, P) complex, centred: the support-consistent iterate of least chi^2.
    support : (B, P, P) bool, centred: the final support.
    chi2 : (B, n_iter) float32: chi^2 of the iterate entering each iteration.
    final_chi2 : (B,) float32: chi^2 of ``obj``.
    best_chi2 : (B,) float32: chi^2 of ``best_obj``.
    collapsed : (B,) bool: shrink-wrap collapsed for this pattern (its support was kept).
    snapshots : {iteration: (B, P, P) complex, centred} the iterate entering each requested
        iteration, projected onto the support in force (for figures such as Fig. 6).
    """

    obj: torch.Tensor
    best_obj: torch.Tensor
    support: torch.Tensor
    chi2: torch.Tensor
    final_chi2: torch.Tensor
    best_chi2: torch.Tensor
    collapsed: torch.Tensor
    snapshots: dict = dataclasses.field(default_factory=dict)


def _per_pattern(value, batch: int, device, dtype) -> torch.Tensor:
    """A scalar or a length-B sequence/tensor -> (B, 1, 1) tensor."""
    t = torch.as_tensor(value, device=device, dtype=dtype)
    if t.ndim == 0:
        t = t.expand(batch)
    return t.reshape(batch, 1, 1)


def _keep_best(x, err, best_x, best_chi2, ties: bool = False):
    """Keep, per pattern, whichever of (x, best_x) has the lower chi^2.

    A complex ``torch.where`` over the batch costs about an FFT on CPU; under ER the error
    falls at every step, so usually every pattern improves and ``x`` is kept as it is
    (the loop never writes into an iterate in place, so no copy is needed).
    """
    better = err <= best_chi2 if ties else err < best_chi2
    if bool(better.all()):
        return x, err
    best_chi2 = torch.where(better, err, best_chi2)
    if bool(better.any()):
        best_x = best_x.clone()
        best_x[better] = x[better]
    return best_x, best_chi2


def run_phasing(
    modulus: torch.Tensor,
    start: torch.Tensor,
    support: torch.Tensor,
    schedule: Schedule | str,
    *,
    mask: torch.Tensor | None = None,
    beta: float | torch.Tensor = 0.9,
    shrinkwrap: ShrinkWrap | None = None,
    upper_bound: torch.Tensor | None = None,
    snapshots: tuple[int, ...] = (),
) -> PhasingResult:
    """Run ``schedule`` on a batch of patterns.

    Parameters
    ----------
    modulus : (B, P, P) float32/float64, centred measured sqrt(I) (any scale).
    start : (B, P, P) complex, centred start object; it is projected onto ``support`` and
        scaled so that its energy matches the pattern's (Parseval), so its scale is free.
    support : (B, P, P) or (P, P) bool, centred initial support.
    schedule : a ``Schedule`` or its string (``"5*(100*HIO+20*ER)"``).
    mask : optional (B, P, P) or (P, P) bool, True where a pixel is measured; unmeasured
        pixels keep their current Fourier value.
    beta : HIO/RAAR feedback, a float or one value per pattern (B,).
    shrinkwrap : when and how to update the support; None keeps the support fixed.
    upper_bound : (P, P) or (B, P, P) bool upper-bound support for shrink-wrap
        (default: the whole field).
    snapshots : iterations at which to keep a copy of the (support-projected) iterate;
        ``len(schedule)`` means the final object.

    Returns
    -------
    PhasingResult
    """
    algorithms = as_schedule(schedule).expand()
    batch, size = modulus.shape[0], modulus.shape[-1]
    device = modulus.device
    real = modulus.dtype if modulus.dtype in (torch.float32, torch.float64) else torch.float32
    cplx = torch.complex64 if real == torch.float32 else torch.complex128

    def unshift(t):
        return torch.fft.ifftshift(t, dim=_DIMS2)

    m = unshift(modulus.to(real))
    s = unshift(support.to(device=device, dtype=torch.bool).expand(batch, size, size)).clone()
    w = None if mask is None else unshift(mask.to(device=device, dtype=torch.bool))
    ub = None if upper_bound is None else unshift(upper_bound.to(device=device, dtype=torch.bool))
    b = _per_pattern(beta, batch, device, real)
    m_measured = m if w is None else m * w
    norm = (m_measured * m_measured).sum(_DIMS2).clamp_min(_EPS)

    x = torch.where(s, unshift(start.to(device=device, dtype=cplx)), 0)
    energy = (x.abs() ** 2).sum(_DIMS2, keepdim=True)
    x = x * torch.sqrt(norm[:, None, None] / energy.clamp_min(_EPS))  # measured energy only

    n_iter = len(algorithms)
    chi2 = torch.empty(batch, n_iter, device=device, dtype=torch.float32)
    best_chi2 = torch.full((batch,), float("inf"), device=device, dtype=real)
    best_x = x
    collapsed = torch.zeros(batch, dtype=torch.bool, device=device)
    transfer = None
    if shrinkwrap is not None:
        transfer = gaussian_transfer(size, shrinkwrap.sigma, device=device, dtype=real)
        if ub is None:
            ub = torch.ones(size, size, dtype=torch.bool, device=device)

    def coefficients(support):
        names = set(algorithms)
        return {n: COEFFICIENTS[n](support, b, real) for n in names}

    coef = coefficients(s)
    wanted, kept = set(snapshots), {}
    for k, name in enumerate(algorithms):
        if shrinkwrap is not None and shrinkwrap.due(k):
            new = shrink_wrap(x, ub, threshold=shrinkwrap.threshold, transfer=transfer)
            collapsed |= new.flatten(1).sum(1) < shrinkwrap.min_pixels
            s = torch.where(collapsed[:, None, None], s, new)
            coef = coefficients(s)
        if k in wanted:
            kept[k] = torch.fft.fftshift(torch.where(s, x, 0), dim=_DIMS2)
        spectrum = torch.fft.fft2(x, norm="ortho")
        mag = magnitude(spectrum)
        diff = mag - m
        if w is not None:
            diff = diff * w
        err = torch.linalg.vecdot(diff, diff, dim=-1).sum(-1) / norm
        chi2[:, k] = err
        if k == 0 or algorithms[k - 1] == "ER":  # x satisfies the support: a valid object
            best_x, best_chi2 = _keep_best(x, err, best_x, best_chi2)
        ratio = m / mag.clamp_min_(_EPS)
        if w is not None:
            ratio = torch.where(w, ratio, 1.0)
        y = torch.fft.ifft2(spectrum.mul_(ratio), norm="ortho")
        x = apply(coef[name], x, y)

    x = torch.where(s, x, 0)
    mag = magnitude(torch.fft.fft2(x, norm="ortho"))
    diff = mag - m if w is None else (mag - m) * w
    final = (diff * diff).sum(_DIMS2) / norm
    best_x, best_chi2 = _keep_best(x, final, best_x, best_chi2, ties=True)

    def shift(t):
        return torch.fft.fftshift(t, dim=_DIMS2)

    if n_iter in wanted:
        kept[n_iter] = shift(x)

    return PhasingResult(
        obj=shift(x),
        best_obj=shift(best_x),
        support=shift(s),
        chi2=chi2,
        final_chi2=final.float(),
        best_chi2=best_chi2.float(),
        collapsed=collapsed,
        snapshots=kept,
    )
