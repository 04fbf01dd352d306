"""Fourier-slice diffraction and the invariances of |F| (global phase, shift, twin)."""

from __future__ import annotations

import math

import pytest
import torch
from _physics_helpers import random_inputs, random_object

from cdiflow.metrics import twin
from cdiflow.physics.diffraction import (
    fourier_slice_pattern,
    literal_slice_pattern,
    project_along_beam,
    rocking_patterns,
)
from cdiflow.physics.fft import (
    centred_fft2,
    centred_fft3,
    centred_ifft2,
    crop_centre,
    object_modulus,
    pad_centre,
)
from cdiflow.physics.generator import complex_volumes


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize(
    ("dtype", "tolerance"), [(torch.complex64, 1e-5), (torch.complex128, 1e-12)]
)
def test_fourier_slice_equals_3d_fft_slice(config, dtype, tolerance):
    parameters, noise = random_inputs(config, seed=11, count=4)
    volumes = complex_volumes(config, parameters, noise).to(dtype)
    fast = fourier_slice_pattern(volumes, config.pattern_size)
    literal = literal_slice_pattern(volumes, config.pattern_size)
    assert fast.shape == literal.shape == (4, 64, 64) and fast.dtype == literal.dtype
    for f, lit in zip(fast, literal, strict=True):
        assert _relative(f, lit) < tolerance


def test_fourier_slice_of_random_complex_volumes_float64():
    gen = torch.Generator().manual_seed(5)
    volume = torch.randn((2, 16, 16, 16), dtype=torch.complex128, generator=gen)
    assert _relative(fourier_slice_pattern(volume, 32), literal_slice_pattern(volume, 32)) < 1e-12


def test_rocking_planes_equal_the_3d_fft_planes():
    """Plane k_z = q of the 3D transform: 2D transform of the z-ramped projection, exactly."""
    gen = torch.Generator().manual_seed(8)
    volume = torch.randn((2, 8, 8, 8), dtype=torch.complex128, generator=gen)
    offsets = [-12, -3, 0, 1, 11]
    planes = rocking_patterns(volume, 24, offsets)
    literal = centred_fft3(pad_centre(volume, 24, ndim=3)).abs() * math.sqrt(24)
    assert planes.shape == (2, 5, 24, 24)
    assert _relative(planes, literal[:, [12 + q for q in offsets]]) < 1e-12
    assert _relative(planes[:, 2], fourier_slice_pattern(volume, 24)) < 1e-12


def test_projection_sums_along_the_beam():
    volume = torch.zeros((1, 8, 8, 8), dtype=torch.complex128)
    volume[0, :, 2, 5] = 1j
    projection = project_along_beam(volume)
    assert projection[0, 2, 5] == 8j and projection.abs().sum() == 8


def test_fft_convention_is_centred_and_unitary(rng):
    obj = random_object(rng)
    field = pad_centre(obj, 64)
    spectrum = centred_fft2(field)
    assert torch.allclose(spectrum.abs().pow(2).sum(), field.abs().pow(2).sum(), rtol=1e-12)
    torch.testing.assert_close(centred_ifft2(spectrum), field, rtol=0, atol=1e-12)
    assert spectrum[32, 32] == pytest.approx(obj.sum().item() / 64, rel=1e-12)  # k = 0 centred
    torch.testing.assert_close(crop_centre(field, 32), obj)
    torch.testing.assert_close(object_modulus(obj, 64), spectrum.abs(), rtol=0, atol=1e-12)


def test_modulus_ignores_global_phase(rng):
    obj = random_object(rng)
    turned = obj * torch.exp(torch.tensor(1.234j, dtype=torch.complex128))
    assert _relative(object_modulus(turned, 64), object_modulus(obj, 64)) < 1e-12


@pytest.mark.parametrize("shift", [(3, -5), (-7, 0), (8, 8)])
def test_modulus_ignores_integer_shifts(rng, shift):
    obj = random_object(rng)  # a 16 x 16 support in the 32 box: these shifts stay inside
    moved = torch.roll(obj, shifts=shift, dims=(-2, -1))
    assert moved.abs().sum() == pytest.approx(obj.abs().sum().item(), rel=1e-12)
    assert _relative(object_modulus(moved, 64), object_modulus(obj, 64)) < 1e-12
    # And in the padded field, anywhere (a circular shift of the P x P field).
    field = pad_centre(obj, 64)
    far = torch.roll(field, shifts=(shift[0] * 3, shift[1] * 3), dims=(-2, -1))
    assert _relative(centred_fft2(far).abs(), centred_fft2(field).abs()) < 1e-12


def test_modulus_ignores_the_twin(rng):
    obj = random_object(rng)
    assert not torch.allclose(twin(obj), obj)
    torch.testing.assert_close(twin(twin(obj)), obj, rtol=0, atol=0)
    assert _relative(object_modulus(twin(obj), 64), object_modulus(obj, 64)) < 1e-12


def test_generated_particles_have_the_twin_invariance_too(config):
    parameters, noise = random_inputs(config, seed=2, count=3)
    projection = project_along_beam(complex_volumes(config, parameters, noise)).to(torch.complex128)
    for p in projection:
        assert _relative(object_modulus(twin(p), 64), object_modulus(p, 64)) < 1e-12


def test_object_modulus_refuses_objects_larger_than_the_pattern():
    with pytest.raises(ValueError, match="does not fit"):
        object_modulus(torch.zeros((40, 40), dtype=torch.complex64), 32)


def test_object_modulus_is_differentiable(rng):
    obj = random_object(rng, n=8, support=4).requires_grad_(True)
    object_modulus(obj, 16).pow(2).sum().backward()
    # Parseval: d/dx sum |F|^2 = d/dx sum |x|^2 = 2 x.
    torch.testing.assert_close(obj.grad, 2 * obj.detach(), rtol=0, atol=1e-12)
