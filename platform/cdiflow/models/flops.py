"""Parameter and FLOP counts of a model (conv multiply-adds x 2, measured with hooks)."""

from __future__ import annotations

import torch
from torch import nn


def count_parameters(model: nn.Module) -> int:
    """Number of trainable-or-not parameters (BN buffers excluded)."""
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_flops(model: nn.Module, input_size: int = 64) -> int:
    """FLOPs of one forward pass per pattern: 2 x multiply-adds of every Conv2d.

    Elementwise work (BN, activations, pooling, upsampling, bias) is not counted; it is
    under 2% of the conv work for this architecture. Counted on a (1, 1, P, P) input.
    """
    total = 0

    def hook(module: nn.Conv2d, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        kh, kw = module.kernel_size
        per_output = 2 * (module.in_channels // module.groups) * kh * kw
        total += per_output * output.numel()

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    try:
        model.eval()
        param = next(model.parameters())
        model(torch.zeros(1, 1, input_size, input_size, dtype=param.dtype, device=param.device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total
