"""The fused loop's FFT pair (FFTW where it runs) against torch's unscaled transforms,
and the rule that picks the backend."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from cdiflow.errors import ConfigError
from cdiflow.phasing import cpu_fft
from cdiflow.phasing.runner import run_phasing
from cdiflow.phasing.shrinkwrap import ShrinkWrap, square_support
from cdiflow.physics.fft import centred_fft2, normalise_modulus, pad_centre
from conftest import synthetic_objects

TOL = {torch.complex64: dict(rtol=1e-4, atol=1e-4), torch.complex128: dict(rtol=1e-10, atol=1e-9)}


@pytest.fixture(params=["fftw", "torch"])
def fft_backend(request, monkeypatch):
    """Each test under both backends (FFTW skipped without pyfftw)."""
    if request.param == "fftw" and not cpu_fft.available():
        pytest.skip("pyfftw not installed")
    yield _force(monkeypatch, request.param)
    cpu_fft.backend.cache_clear()


def _force(monkeypatch, name: str) -> str:
    monkeypatch.setenv(cpu_fft.BACKEND_ENV, name)
    cpu_fft.backend.cache_clear()
    return cpu_fft.backend()


def _field(batch: int, size: int, dtype, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    real = torch.randn(batch, size, size, 2, generator=g, dtype=torch.float64)
    return torch.view_as_complex(real).to(dtype)


@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
@pytest.mark.parametrize("size", [16, 64, 128, 256])
def test_the_pair_is_torchs_unscaled_pair_and_the_input_is_kept(fft_backend, dtype, size):
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


def test_fftw_runs_in_place_up_to_its_size_and_torch_above(monkeypatch):
    if not cpu_fft.available():
        pytest.skip("pyfftw not installed")
    _force(monkeypatch, "fftw")
    small = cpu_fft.fft2(_field(2, cpu_fft.FFTW_MAX_SIZE, torch.complex64))
    assert cpu_fft.ifft2_(small) is small  # FFTW: in place
    large = cpu_fft.fft2(_field(1, 2 * cpu_fft.FFTW_MAX_SIZE, torch.complex64))
    assert cpu_fft.ifft2_(large) is not large  # torch: a new tensor


def test_the_torch_backend_never_runs_fftw(monkeypatch):
    assert _force(monkeypatch, "torch") == "torch"
    small = cpu_fft.fft2(_field(2, 32, torch.complex64))
    assert cpu_fft.ifft2_(small) is not small  # torch's inverse: a new tensor


def test_a_misaligned_or_strided_array_takes_torchs_path_with_the_same_answer(fft_backend):
    base = _field(4, 33, torch.complex64)  # 33 x 33 x 8 bytes: slices are misaligned
    part = base[1:3]
    assert torch.allclose(cpu_fft.fft2(part), torch.fft.fft2(part), **TOL[torch.complex64])
    strided = _field(2, 32, torch.complex64).transpose(-1, -2)
    assert torch.allclose(cpu_fft.fft2(strided), torch.fft.fft2(strided), **TOL[torch.complex64])


def test_threads_each_get_their_own_plans_and_agree(fft_backend):
    x = _field(8, 64, torch.complex64, seed=3)
    want = torch.fft.fft2(x)
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda _: cpu_fft.fft2(x), range(16)))
    for g in got:
        assert torch.allclose(g, want, **TOL[torch.complex64])


def test_the_fused_loop_gives_the_same_answer_on_either_backend(monkeypatch):
    if not cpu_fft.available():
        pytest.skip("pyfftw not installed")
    obj = pad_centre(synthetic_objects(4, seed=5, size=16), 32)
    mod = normalise_modulus(centred_fft2(obj).abs()).float()
    g = torch.Generator().manual_seed(7)
    start = torch.exp(2j * math.pi * torch.rand(mod.shape, generator=g)).to(torch.complex64)
    kw = dict(shrinkwrap=ShrinkWrap(start=4, every=4), kernels="auto")
    runs = {}
    for name in ("fftw", "torch"):
        _force(monkeypatch, name)
        runs[name] = run_phasing(mod, start, square_support(32, 16), "10*HIO+6*ER", **kw)
    cpu_fft.backend.cache_clear()
    a, b = runs["fftw"], runs["torch"]
    assert torch.allclose(a.final_chi2, b.final_chi2, rtol=1e-3, atol=1e-6)
    assert torch.allclose(a.best_obj, b.best_obj, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(
    "vendor, mkl, want",
    [
        ("GenuineIntel", True, "torch"),
        ("AuthenticAMD", True, "fftw"),
        ("", True, "fftw"),
        ("GenuineIntel", False, "fftw"),
    ],
)
def test_auto_takes_torchs_fft_only_for_mkl_on_intel(monkeypatch, vendor, mkl, want):
    if not cpu_fft.available():
        pytest.skip("pyfftw not installed")
    monkeypatch.setattr(cpu_fft, "cpu_vendor", lambda: vendor)
    monkeypatch.setattr(torch.backends.mkl, "is_available", lambda: mkl)
    assert _force(monkeypatch, "auto") == want
    cpu_fft.backend.cache_clear()


def test_a_bad_setting_is_a_config_error_naming_the_choices(monkeypatch):
    monkeypatch.setenv(cpu_fft.BACKEND_ENV, "mkl")
    cpu_fft.backend.cache_clear()
    with pytest.raises(ConfigError, match="auto, fftw, torch"):
        cpu_fft.backend()
    cpu_fft.backend.cache_clear()


def test_the_vendor_is_read_from_cpuinfo():
    intel = "processor\t: 0\nvendor_id\t: GenuineIntel\nmodel name\t: Xeon\n"
    assert cpu_fft.cpu_vendor(intel) == "GenuineIntel"
    assert cpu_fft.cpu_vendor("processor\t: 0\nBogoMIPS\t: 50.00\n") == ""  # ARM


def test_the_cli_stops_on_a_bad_setting_before_any_work(tmp_path):
    env = {**os.environ, cpu_fft.BACKEND_ENV: "mkl"}
    out = tmp_path / "data"
    cmd = [sys.executable, "-m", "cdiflow.cli", "generate", "--num-patterns", "8"]
    proc = subprocess.run([*cmd, "--out", str(out)], env=env, capture_output=True, text=True)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "CDIFLOW_CPU_FFT='mkl'" in lines[0], proc.stderr
    assert not out.exists()  # nothing was written
