"""Building blocks of the paper's CNN: conv + BN + LeakyReLU units that fold for inference.

The paper writes each unit as "conv + LeakyReLU + BN". We apply BN *before* the
activation (conv -> BN -> LeakyReLU). Both orders have the same expressive power, but
only this one folds exactly into the convolution at inference: a BN after the activation
would have to fold into the *next* conv, which is inexact at zero-padded borders and
across a max-pooling when a BN scale is negative. Folding removes every BN pass and
halves the elementwise memory traffic on CPU.
"""

from __future__ import annotations

import torch
from torch import nn


class ConvBNAct(nn.Module):
    """One or more convs (no activation between), then BN, then LeakyReLU.

    ``fold()`` merges the BN into the last conv (exact in eval mode) and drops it.
    """

    def __init__(self, convs: list[nn.Conv2d], channels: int, slope: float, momentum: float):
        super().__init__()
        self.convs = nn.Sequential(*convs)
        self.bn: nn.Module = nn.BatchNorm2d(channels, momentum=momentum)
        self.act = nn.LeakyReLU(slope)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.convs(x)))

    @torch.no_grad()
    def fold(self) -> None:
        """Fold the BN (running statistics) into the last conv; the block becomes conv+act."""
        if not isinstance(self.bn, nn.BatchNorm2d):
            return
        conv: nn.Conv2d = self.convs[-1]
        bn = self.bn
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
        folded = nn.Conv2d(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            padding=conv.padding,
            bias=True,
        ).to(conv.weight.device, conv.weight.dtype)
        folded.weight.copy_(conv.weight * scale.reshape(-1, 1, 1, 1))
        folded.bias.copy_(bn.bias + (bias - bn.running_mean) * scale)
        self.convs[-1] = folded
        self.bn = nn.Identity()


def conv3x3_unit(cin: int, cout: int, slope: float, momentum: float) -> ConvBNAct:
    """The paper's first unit type: 3x3 conv + BN + LeakyReLU."""
    return ConvBNAct([nn.Conv2d(cin, cout, 3, padding=1, bias=False)], cout, slope, momentum)


def separable_unit(channels: int, slope: float, momentum: float) -> ConvBNAct:
    """The paper's second unit type: 3x1 conv + 1x3 conv + BN + LeakyReLU."""
    convs = [
        nn.Conv2d(channels, channels, (3, 1), padding=(1, 0), bias=False),
        nn.Conv2d(channels, channels, (1, 3), padding=(0, 1), bias=False),
    ]
    return ConvBNAct(convs, channels, slope, momentum)


def conv_block(cin: int, cout: int, slope: float, momentum: float) -> nn.Sequential:
    """A block of the paper's Fig. 1: a 3x3 unit followed by a separable unit."""
    return nn.Sequential(
        conv3x3_unit(cin, cout, slope, momentum), separable_unit(cout, slope, momentum)
    )
