"""The engine's fast paths: sampled chi^2, in-place Fourier step, sizes, threads, batch."""

from __future__ import annotations

import math

import pytest
import torch
from phasing_numpy_oracle import phase_one

from cdiflow.phasing.projections import COEFFICIENTS
from cdiflow.phasing.runner import (
    _State,
    batch_for,
    engine_threads,
    idle_cpus,
    run_phasing,
    sampled_iterations,
    useful_threads,
)
from cdiflow.phasing.schedule import parse
from cdiflow.phasing.shrinkwrap import ShrinkWrap, square_support
from cdiflow.physics.farfield import chi2, project_modulus
from cdiflow.physics.fft import centred_fft2, normalise_modulus, pad_centre
from conftest import synthetic_objects


def _problem(size: int, batch: int, seed: int, dtype=torch.float64):
    obj = pad_centre(synthetic_objects(batch, seed=seed, size=size // 2), size)
    mod = normalise_modulus(centred_fft2(obj).abs()).to(dtype)
    g = torch.Generator().manual_seed(seed + 100)
    start = torch.exp(2j * math.pi * torch.rand(mod.shape, generator=g, dtype=torch.float64))
    return mod, start, square_support(size, size // 2)


def _valid_best_iteration(res, algorithms) -> torch.Tensor:
    """Per pattern, the iteration of least chi^2 among support-valid iterates (n: final)."""
    n = len(algorithms)
    valid = torch.tensor([k == 0 or algorithms[k - 1] == "ER" for k in range(n)])
    curve = torch.where(valid, res.chi2, math.inf)
    curve = torch.cat([curve, res.final_chi2[:, None]], dim=1)
    # ties go to the later iterate, as the runner keeps the final one on a tie
    flipped = curve.flip(1).argmin(1)
    return n - flipped


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("every", [2, 3, 7])
def test_sampled_chi2_keeps_the_same_objects(seed, every):
    """Property: the iterates never depend on chi^2, so obj and final chi^2 are identical;
    the best is identical wherever k=1's best iterate is one that k samples."""
    mod, start, upper = _problem(64, 4, seed)
    text = "2*(13*HIO+6*ER)+3*RAAR+5*ER"
    sw = ShrinkWrap(start=10, every=6)
    kw = dict(shrinkwrap=sw, upper_bound=upper, beta=0.85)
    one = run_phasing(mod, start, upper, text, **kw)
    some = run_phasing(mod, start, upper, text, chi2_every=every, **kw)
    algorithms = parse(text).expand()
    record = torch.tensor(sampled_iterations(algorithms, every))
    assert torch.equal(one.obj, some.obj) and torch.equal(one.final_chi2, some.final_chi2)
    assert torch.equal(one.chi2[:, record], some.chi2[:, record])
    assert torch.isnan(some.chi2[:, ~record]).all()
    sampled = torch.cat([record, torch.tensor([True])])  # the final object always counts
    at = _valid_best_iteration(one, algorithms)
    for i in range(mod.shape[0]):
        if sampled[at[i]]:
            assert torch.equal(one.best_obj[i], some.best_obj[i])
            assert one.best_chi2[i] == some.best_chi2[i]
        assert some.best_chi2[i] >= one.best_chi2[i]  # k=1 sees every candidate
    # the kept best's chi^2 is exact: eq. 5 of the kept object
    exact = chi2(centred_fft2(some.best_obj).abs(), mod)
    assert torch.allclose(some.best_chi2, exact.float(), rtol=1e-5)


def test_sampled_iterations_include_every_kth_and_the_end_of_each_er_run():
    algorithms = parse("4*HIO+3*ER+2*HIO+ER").expand()
    record = sampled_iterations(algorithms, 5)
    assert [k for k, r in enumerate(record) if r] == [0, 5, 7]  # 7: after the ER run
    assert all(sampled_iterations(algorithms, 1))
    with pytest.raises(ValueError):
        run_phasing(torch.ones(1, 8, 8), torch.ones(1, 8, 8), torch.ones(8, 8), "ER", chi2_every=0)


@pytest.mark.parametrize("masked", [False, True])
def test_in_place_fourier_step_is_the_physics_projection(masked):
    mod, start, upper = _problem(64, 3, 4, dtype=torch.float32)
    mask = torch.ones(64, 64, dtype=torch.bool)
    mask[29:35, 29:35] = False
    st = _State.prepare(mod, start, upper, mask if masked else None, None, 0.9, None)
    x = st.x.clone()
    y, err = st.fourier(x, with_chi2=True)
    want, mag = project_modulus(torch.fft.fft2(x, norm="ortho"), st.m, st.w)
    assert torch.allclose(y, torch.fft.ifft2(want, norm="ortho"), atol=1e-6)
    assert torch.allclose(err, chi2(mag, st.m, st.w, norm=st.norm), rtol=1e-5)
    assert torch.equal(x, st.x)  # the iterate is read, never written
    assert st.fourier(x, with_chi2=False)[1] is None


def test_coefficients_equal_the_affine_formulas():
    g = torch.Generator().manual_seed(3)
    s = torch.rand(3, 16, 16, generator=g) > 0.4
    beta = torch.tensor([0.9, 0.7, 0.5]).reshape(3, 1, 1)
    sf = s.float()
    a, c = COEFFICIENTS["HIO"](s, beta, torch.float32)
    assert torch.equal(a, 1.0 - sf) and torch.equal(c, sf - beta * (1.0 - sf))
    a, c = COEFFICIENTS["RAAR"](s, beta, torch.float32)
    assert torch.equal(a, beta * (1.0 - sf))
    assert torch.equal(c, sf + (1.0 - 2.0 * beta) * (1.0 - sf))


@pytest.mark.parametrize("size", [128, 256])
def test_larger_patterns_match_the_numpy_oracle(size):
    """Nothing assumes 64: the same engine at 128 and 256, one pattern, against the oracle."""
    mod, start, upper = _problem(size, 1, 5)
    text = "6*HIO+3*ER"
    sw = ShrinkWrap(start=4, every=3)
    res = run_phasing(mod, start, upper, text, shrinkwrap=sw, upper_bound=upper)
    sw_dict = {"start": 4, "every": 3, "sigma": 1.0, "threshold": 0.1}
    x, curve, s = phase_one(
        mod[0].numpy(), start[0].numpy(), upper.numpy(), parse(text).expand(), 0.9,
        sw_dict, upper.numpy(),
    )  # fmt: skip
    assert torch.equal(res.support[0], torch.from_numpy(s))
    assert torch.allclose(res.obj[0], torch.from_numpy(x), atol=1e-9)
    assert torch.allclose(res.chi2[0].double(), torch.from_numpy(curve), rtol=1e-5, atol=1e-9)


def test_threads_are_set_for_the_call_and_restored():
    before = torch.get_num_threads()
    with engine_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    mod, start, upper = _problem(64, 1, 6)
    run_phasing(mod, start, upper, "3*ER", threads=1)
    assert torch.get_num_threads() == before


def test_one_small_pattern_gets_one_thread_a_large_one_more():
    """Below torch's grain (32768 pixels) only the FFT could use a second thread."""
    assert useful_threads(64, 2) == 1
    assert useful_threads(128, 4) == 1
    assert useful_threads(256, 2) == 2
    assert useful_threads(512, 16) == 8
    assert useful_threads(512, 1) == 1
    mod, start, upper = _problem(64, 1, 6)
    alone = run_phasing(mod, start, upper, "5*HIO+3*ER")
    asked = run_phasing(mod, start, upper, "5*HIO+3*ER", threads=2)
    assert torch.equal(asked.obj, alone.obj)


def test_batch_for_fits_the_cache_and_gives_each_thread_work():
    cache = 2 * 2**20
    sizes = [batch_for(p, threads=1, cache_bytes=cache) for p in (64, 128, 256, 512)]
    assert sizes == [32, 8, 2, 1]  # at least 2^17 pixels, at least one pattern
    assert batch_for(512, threads=2, cache_bytes=cache) == 2
    assert batch_for(64, threads=2, cache_bytes=cache) == 64  # 2^17 pixels per thread
    assert batch_for(128, threads=2, cache_bytes=2**30) > 8  # a big cache holds more


@pytest.mark.parametrize("threads", [None, 2])
def test_a_batch_run_in_chunks_gives_the_same_answer(threads):
    """A CPU batch runs in chunks (``batch_for``'s by default): per pattern the same
    result, shared and per-pattern inputs cut alike."""
    mod, start, upper = _problem(64, 7, 11, dtype=torch.float32)
    kw = dict(beta=torch.linspace(0.6, 0.9, 7), shrinkwrap=ShrinkWrap(start=4, every=4))
    kw |= dict(upper_bound=upper, mask=torch.rand(7, 64, 64) > 0.01, snapshots=(5,))
    kw |= dict(threads=threads)
    start = start.to(torch.complex64)
    whole = run_phasing(mod, start, upper, "8*HIO+4*ER", chunk=0, **kw)
    chunked = run_phasing(mod, start, upper, "8*HIO+4*ER", chunk=2, **kw)
    assert torch.allclose(chunked.best_obj, whole.best_obj, atol=1e-5)
    assert torch.equal(chunked.support, whole.support)
    assert torch.allclose(chunked.chi2, whole.chi2, rtol=1e-4, equal_nan=True)
    assert torch.allclose(chunked.snapshots[5], whole.snapshots[5], atol=1e-5)
    default = run_phasing(mod.repeat(6, 1, 1), start.repeat(6, 1, 1), upper, "4*ER", chunk=None)
    alone = run_phasing(mod, start, upper, "4*ER", chunk=0)
    assert torch.allclose(default.chi2[35:], alone.chi2, rtol=1e-4)  # 42 > batch_for's 32


def test_threads_split_the_batch_and_give_the_same_answer():
    """threads=n runs n single-threaded workers on slices: per pattern the same result."""
    mod, start, upper = _problem(64, 5, 7, dtype=torch.float32)
    start = start.to(torch.complex64)
    mask = torch.ones(64, 64, dtype=torch.bool)
    mask[30:34, 30:34] = False
    kw = dict(
        beta=torch.linspace(0.6, 0.9, 5),
        shrinkwrap=ShrinkWrap(start=6, every=4),
        upper_bound=upper,
        mask=mask,
        snapshots=(3, 20),
        chi2_every=3,
    )
    whole = run_phasing(mod, start, upper, "12*HIO+8*ER", **kw)
    split = run_phasing(mod, start, upper, "12*HIO+8*ER", threads=2, **kw)
    assert torch.allclose(split.obj, whole.obj, atol=1e-5)
    assert torch.allclose(split.best_obj, whole.best_obj, atol=1e-5)
    assert torch.equal(split.support, whole.support)
    assert torch.allclose(split.chi2, whole.chi2, rtol=1e-4, equal_nan=True)
    assert split.snapshots.keys() == whole.snapshots.keys()
    assert torch.allclose(split.snapshots[3], whole.snapshots[3], atol=1e-5)


def test_idle_cpus_counts_what_else_is_running_now(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert idle_cpus(("0.10 0.20 0.30 1/250 999\n",)) == 4  # only the reader runs
    assert idle_cpus(("3.90 2.00 1.00 3/250 999\n",)) == 2  # two others run
    assert idle_cpus(("8.00 8.00 8.00 9/250 999\n",)) == 1  # never below one
    # a task that ran for one reading only does not count
    assert idle_cpus(("0 0 0 2/250 9\n", "0 0 0 1/250 9\n", "0 0 0 3/250 9\n")) == 4


def test_one_pattern_on_a_busy_machine_gets_one_thread(monkeypatch):
    import cdiflow.phasing.runner as runner

    seen = []
    real = runner.engine_threads

    def spy(threads):
        seen.append(threads)
        return real(threads)

    monkeypatch.setattr(runner, "engine_threads", spy)
    mod, start, upper = _problem(256, 1, seed=2, dtype=torch.float32)
    monkeypatch.setattr(runner, "idle_cpus", lambda: 2)
    run_phasing(mod, start, upper, "2*ER", threads=2)
    monkeypatch.setattr(runner, "idle_cpus", lambda: 1)
    run_phasing(mod, start, upper, "2*ER", threads=2)
    assert seen == [2, 1]
