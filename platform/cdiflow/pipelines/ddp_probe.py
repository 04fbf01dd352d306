"""A one-step DDP probe: checks that Ray Train's data-parallel step is the serial step.

``ddp_step_worker`` runs on every Train worker: it builds the CNN from a fixed seed, puts
every BatchNorm in eval mode, takes its contiguous slice of one fixed batch, does one SGD
step on the eq. 4 loss through DDP, and writes its flattened parameters to
``out_dir/rank-<r>.npy``. With equal slices, DDP's gradient (the mean of the per-rank
gradients of per-rank batch means) equals the gradient of the batch mean over the
concatenated batch, so the result must equal one serial step on the whole batch.

Why BatchNorm in eval mode: in train mode each rank normalises with its own slice's
statistics, so a 2-worker step is *not* the 1-worker step on the concatenated batch.
SyncBatchNorm would fix that but torch supports it only on GPUs (it raises on CPU tensors),
and this probe must run on gloo/CPU. Eval-mode BN uses the (identical) running statistics
on every rank, which isolates what the probe tests: weight broadcast and gradient
all-reduce.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def freeze_batchnorm(model) -> None:
    """Eval mode for every BatchNorm (running statistics; affine weights still train)."""
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()


def flat_parameters(model) -> np.ndarray:
    """All parameters, concatenated in ``named_parameters`` order, float64."""
    import torch

    model = getattr(model, "module", model)
    with torch.no_grad():
        return torch.cat([p.detach().double().flatten() for p in model.parameters()]).numpy()


def serial_step(model_config: dict, batch: dict[str, np.ndarray], seed: int, lr: float):
    """The reference: one SGD step on the whole batch in this process; returns the model."""
    import torch

    # lazy: torch, like the torch import above
    from cdiflow.losses import physics_loss
    from cdiflow.models import ModelConfig, build_model

    model = build_model(ModelConfig.from_dict(model_config), seed=seed)
    model.train()
    freeze_batchnorm(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    tensors = {k: torch.from_numpy(v) for k, v in batch.items()}
    prediction = model(tensors["modulus"])
    loss = physics_loss(prediction, tensors["modulus"], tensors["amplitude"], tensors["phase"])
    optimizer.zero_grad()
    loss["loss"].backward()
    optimizer.step()
    return model


def ddp_step_worker(config: dict) -> None:
    """Ray Train worker: one DDP step on this rank's slice; writes ``rank-<r>.npy``.

    ``config``: ``model`` (ModelConfig dict), ``batch`` (path of an .npz with modulus,
    amplitude, phase), ``seed``, ``lr``, ``out_dir``.
    """
    import ray.train
    import ray.train.torch
    import torch

    # lazy: torch, like the torch import above
    from cdiflow.losses import physics_loss
    from cdiflow.models import ModelConfig, build_model

    context = ray.train.get_context()
    rank, world = context.get_world_rank(), context.get_world_size()
    torch.set_num_threads(1)
    # rank 0 starts from the serial model; the others from different weights on purpose,
    # so the test also checks that DDP broadcasts rank 0's weights
    model = build_model(ModelConfig.from_dict(config["model"]), seed=config["seed"] + 1000 * rank)
    model = ray.train.torch.prepare_model(model)
    model.train()
    freeze_batchnorm(model)
    data = np.load(config["batch"])
    size = data["modulus"].shape[0] // world
    part = {k: torch.from_numpy(data[k][rank * size : (rank + 1) * size]) for k in data.files}
    optimizer = torch.optim.SGD(model.parameters(), lr=config["lr"])
    prediction = model(part["modulus"])
    loss = physics_loss(prediction, part["modulus"], part["amplitude"], part["phase"])
    optimizer.zero_grad()
    loss["loss"].backward()
    optimizer.step()
    np.save(Path(config["out_dir"]) / f"rank-{rank}.npy", flat_parameters(model))
    ray.train.report({"rank": rank, "loss": float(loss["loss"].detach())})
