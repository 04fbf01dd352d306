"""The fused loop's FFT pair (FFTW where it runs) against torch's unscaled transforms."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from cdiflow.phasing import cpu_fft

TOL = {torch.complex64: dict(rtol=1e-4, atol=1e-4), torch.complex128: dict(rtol=1e-10, atol=1e-9)}


def _field(batch: int, size: int, dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(batch, size, size, 2, generator=g, dtype=torch.float64)
    return torch.view_as_complex(real).to(dtype)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("size", [16, 64, 128, 256])
def test_the_pair_is_torchs_unscaled_pair_and_the_input_is_kept(dtype, size):
    x = _field(3, size, dtype)
    before = x.clone()
    spectrum = cpu_fft.fft2(x)
    assert torch.equal(x, before)  # the iterate stays valid (the kept best may be it)
    assert torch.allclose(spectrum, torch.fft.fft2(x, norm="backward"), **TOL[dtype])
    want = torch.fft.ifft2(spectrum, norm="forward")
    back = cpu_fft.ifft2_(spectrum)
    assert torch.allclose(back, want, **TOL[dtype])
    # unscaled both ways: the round trip is n times the input
    assert torch.allclose(back / size**2, x, **TOL[dtype])


def test_fftw_runs_in_place_up_to_its_size_and_torch_above():
    if not cpu_fft.available():
        pytest.skip("pyfftw not installed")
    small = cpu_fft.fft2(_field(2, cpu_fft.FFTW_MAX_SIZE, torch.complex64))
    assert cpu_fft.ifft2_(small) is small  # FFTW: in place
    large = cpu_fft.fft2(_field(1, 2 * cpu_fft.FFTW_MAX_SIZE, torch.complex64))
    assert cpu_fft.ifft2_(large) is not large  # torch: a new tensor


def test_a_misaligned_or_strided_array_takes_torchs_path_with_the_same_answer():
    base = _field(4, 33, torch.complex64)  # 33 x 33 x 8 bytes: slices are misaligned
    part = base[1:3]
    assert torch.allclose(cpu_fft.fft2(part), torch.fft.fft2(part), **TOL[torch.complex64])
    strided = _field(2, 32, torch.complex64).transpose(-1, -2)
    assert torch.allclose(cpu_fft.fft2(strided), torch.fft.fft2(strided), **TOL[torch.complex64])


def test_threads_each_get_their_own_plans_and_agree():
    x = _field(8, 64, torch.complex64, seed=3)
    want = torch.fft.fft2(x)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: cpu_fft.fft2(x), range(16)))
    for g in got:
        assert torch.allclose(g, want, **TOL[torch.complex64])
