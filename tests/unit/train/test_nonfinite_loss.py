"""A non-finite training loss stops the epoch with ``NonFiniteLoss`` naming the step."""

from __future__ import annotations

import pickle

import pytest
import torch

from cdiflow.errors import CdiflowError, NonFiniteLoss
from cdiflow.losses import LossWeights
from cdiflow.models import ModelConfig, build_model
from cdiflow.train.loop import train_one_epoch


def _batch(seed: int, nan: bool = False) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    modulus = torch.rand(4, 64, 64, generator=g)
    if nan:
        modulus[1, 30, 31] = float("nan")
    return {
        "modulus": modulus,
        "amplitude": torch.rand(4, 32, 32, generator=g),
        "phase": torch.rand(4, 32, 32, generator=g),
    }


def _setup():
    model = build_model(ModelConfig(base_width=2, depth=1), seed=0)
    return model, torch.optim.SGD(model.parameters(), lr=1e-3)


class _Counting:
    """An iterable of batches that counts how many were taken."""

    def __init__(self, batches):
        self.batches, self.taken = batches, 0

    def __iter__(self):
        for batch in self.batches:
            self.taken += 1
            yield batch


@pytest.mark.parametrize("check_every", [1, 2, None])
def test_nan_in_the_input_modulus_raises_naming_the_step(check_every):
    model, optimizer = _setup()
    batches = _Counting([_batch(0), _batch(1), _batch(2, nan=True), _batch(3), _batch(4)])
    every = {} if check_every is None else {"check_every": check_every}  # None: the default
    with pytest.raises(NonFiniteLoss, match="non-finite .* at step 2 ") as caught:
        train_one_epoch(model, batches, optimizer, None, LossWeights(), "cpu", **every)
    assert caught.value.step == 2 and not torch.isfinite(torch.tensor(caught.value.value))
    assert isinstance(caught.value, CdiflowError)
    # detected at the first check after the bad step, not after the whole epoch
    assert batches.taken == {1: 3, 2: 4, None: 5}[check_every]


def test_finite_epoch_returns_and_error_survives_pickling():
    model, optimizer = _setup()
    out = train_one_epoch(model, [_batch(0), _batch(1)], optimizer, None, LossWeights(), "cpu")
    assert out["patterns"] == 8 and torch.isfinite(torch.tensor(out["loss"]))
    error = pickle.loads(pickle.dumps(NonFiniteLoss(7, float("inf"))))  # Ray ships errors
    assert error.step == 7 and "step 7" in str(error)
