"""The batched phasing runner: B patterns at once, one torch implementation (CPU or GPU).

``run_phasing`` iterates a schedule of projections (``cdiflow.phasing.projections``)
with shrink-wrap (``cdiflow.phasing.shrinkwrap``) over a batch. Inputs and outputs are
centred (``cdiflow.physics.fft``). Inside the loop every array is kept in the
*unshifted* FFT layout (``ifftshift`` once on entry, ``fftshift`` once on exit): each
update is pixel-wise and the support blur is a circular convolution, so nothing changes
but the four ``fftshift`` calls per iteration that the centred convention would cost.
The transforms are the ortho-normalised FFTs of ``centred_fft2`` / ``centred_ifft2``.

chi^2 (paper eq. 5, ``cdiflow.physics.farfield.chi2`` without scale fitting) of the iterate is
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

from cdiflow.phasing.projections import COEFFICIENTS, apply
from cdiflow.phasing.schedule import Schedule, as_schedule
from cdiflow.phasing.shrinkwrap import ShrinkWrap, gaussian_transfer, shrink_wrap
from cdiflow.physics.farfield import chi2 as chi2_of
from cdiflow.physics.farfield import magnitude, project_modulus

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
    st = _State.prepare(modulus, start, support, mask, upper_bound, beta, shrinkwrap)
    names = set(algorithms)
    coef = {n: COEFFICIENTS[n](st.s, st.b, st.real) for n in names}
    chi2 = torch.empty(st.batch, len(algorithms), device=st.device, dtype=torch.float32)
    x, best_x = st.x, st.x
    best_chi2 = torch.full((st.batch,), float("inf"), device=st.device, dtype=st.real)
    wanted, kept = set(snapshots), {}
    for k, name in enumerate(algorithms):
        if shrinkwrap is not None and shrinkwrap.due(k):
            st.update_support(x, shrinkwrap)
            coef = {n: COEFFICIENTS[n](st.s, st.b, st.real) for n in names}
        if k in wanted:
            kept[k] = _shift(torch.where(st.s, x, 0))
        spectrum = torch.fft.fft2(x, norm="ortho")
        projected, mag = project_modulus(spectrum, st.m, st.w, inplace=True)
        err = chi2_of(mag, st.m, st.w, norm=st.norm)
        chi2[:, k] = err
        if k == 0 or algorithms[k - 1] == "ER":  # x satisfies the support: a valid object
            best_x, best_chi2 = _keep_best(x, err, best_x, best_chi2)
        x = apply(coef[name], x, torch.fft.ifft2(projected, norm="ortho"))

    x = torch.where(st.s, x, 0)
    final = chi2_of(magnitude(torch.fft.fft2(x, norm="ortho")), st.m, st.w, norm=st.norm)
    best_x, best_chi2 = _keep_best(x, final, best_x, best_chi2, ties=True)
    if len(algorithms) in wanted:
        kept[len(algorithms)] = _shift(x)
    return PhasingResult(
        obj=_shift(x),
        best_obj=_shift(best_x),
        support=_shift(st.s),
        chi2=chi2,
        final_chi2=final.float(),
        best_chi2=best_chi2.float(),
        collapsed=st.collapsed,
        snapshots=kept,
    )


def _shift(t: torch.Tensor) -> torch.Tensor:
    return torch.fft.fftshift(t, dim=_DIMS2)


def _unshift(t: torch.Tensor) -> torch.Tensor:
    return torch.fft.ifftshift(t, dim=_DIMS2)


@dataclasses.dataclass
class _State:
    """The loop's inputs in the unshifted layout, and the support it updates.

    ``m`` modulus, ``w`` mask (None: all measured), ``s`` support, ``ub`` upper bound,
    ``b`` per-pattern beta (B, 1, 1), ``norm`` sum of the measured |F|^2 (B,), ``x`` the
    scaled start, ``transfer`` the shrink-wrap blur, ``collapsed`` (B,) bool.
    """

    m: torch.Tensor
    w: torch.Tensor | None
    s: torch.Tensor
    ub: torch.Tensor | None
    b: torch.Tensor
    norm: torch.Tensor
    x: torch.Tensor
    transfer: torch.Tensor | None
    collapsed: torch.Tensor

    @property
    def batch(self) -> int:
        return self.m.shape[0]

    @property
    def device(self) -> torch.device:
        return self.m.device

    @property
    def real(self) -> torch.dtype:
        return self.m.dtype

    @classmethod
    def prepare(cls, modulus, start, support, mask, upper_bound, beta, shrinkwrap) -> _State:
        batch, size, device = modulus.shape[0], modulus.shape[-1], modulus.device
        real = modulus.dtype if modulus.dtype in (torch.float32, torch.float64) else torch.float32
        cplx = torch.complex64 if real == torch.float32 else torch.complex128
        m = _unshift(modulus.to(real))
        s = _unshift(support.to(device=device, dtype=torch.bool).expand(batch, size, size)).clone()
        w = None if mask is None else _unshift(mask.to(device=device, dtype=torch.bool))
        ub = None if upper_bound is None else _unshift(upper_bound.to(device, torch.bool))
        m_measured = m if w is None else m * w
        norm = (m_measured * m_measured).sum(_DIMS2).clamp_min(_EPS)
        x = torch.where(s, _unshift(start.to(device=device, dtype=cplx)), 0)
        energy = (x.abs() ** 2).sum(_DIMS2, keepdim=True)
        x = x * torch.sqrt(norm[:, None, None] / energy.clamp_min(_EPS))  # measured energy only
        transfer = None
        if shrinkwrap is not None:
            transfer = gaussian_transfer(size, shrinkwrap.sigma, device=device, dtype=real)
            if ub is None:
                ub = torch.ones(size, size, dtype=torch.bool, device=device)
        collapsed = torch.zeros(batch, dtype=torch.bool, device=device)
        b = _per_pattern(beta, batch, device, real)
        return cls(m, w, s, ub, b, norm, x, transfer, collapsed)

    def update_support(self, x: torch.Tensor, shrinkwrap: ShrinkWrap) -> None:
        """Shrink-wrap; a pattern whose new support collapses keeps its old one."""
        new = shrink_wrap(x, self.ub, threshold=shrinkwrap.threshold, transfer=self.transfer)
        self.collapsed |= new.flatten(1).sum(1) < shrinkwrap.min_pixels
        self.s = torch.where(self.collapsed[:, None, None], self.s, new)
