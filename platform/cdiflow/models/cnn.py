"""The paper's encoder-decoder CNN: a 64x64 modulus in, a 32x32 amplitude and phase out.

Layout (depth d = 3, base width w = 16, the default)::

    (B,1,64,64) -> block(1->w)@64 -> pool -> block(w->2w)@32 -> pool -> block(2w->4w)@16
      -> pool -> block(4w->8w)@8 = code, split into two halves of 4w channels (the paper's
      "encoded result is equally divided into two ... decoder parts")
    each half: up -> block(4w->2w)@16 -> up -> block(2w->w)@32 -> conv3x3(w->1) -> act
    -> concat -> (B,2,32,32): channel 0 amplitude (target max 1), channel 1 phase target
       p = (phi + pi) / (2 pi) in the support, 0 outside.

A block is a 3x3 unit (conv + BN + LeakyReLU) then a separable unit (3x1 conv + 1x3 conv
+ BN + LeakyReLU); see ``cdiflow.models.blocks`` for why BN sits before the activation.
Decoder widths step down one level ahead of the mirrored encoder (U-Net style), which
keeps the 32x32 stage, the most expensive one, at w channels.

Cost of the default (w = 16, d = 3), from ``count_flops`` / ``count_parameters``:
0.131 GFLOP per pattern (conv multiply-adds x 2; elementwise ops are not counted) and
0.29 M parameters. ``base_width`` scales both about quadratically: w = 8 gives 0.033
GFLOP and 0.07 M parameters, w = 12 0.074 GFLOP / 0.16 M, w = 24 0.29 GFLOP / 0.65 M.
On a 2-core CPU the inference copy (``inference_model``) of the shipped model runs
about 680 patterns/s at 1 thread and batch 32 (``inference_batch``): 60% of the fp32
matmul rate measured in turns with it, against 40% at batch 256, whose activations leave
the caches (``benchmarks/results/cnn_inference.json``). The convolutions take most of
the time; at 16 to 64 channels they do not fill the vector units, so w = 8 reaches only
35%. ``torch.compile`` (fusing the activations, pooling and upsampling) gained 1.2-1.5x
at batch 256 for 30 s of compiling, measured at 1 thread; a traced, frozen TorchScript
copy and bf16 autocast were slower (222 and 382 patterns/s against 722 channels_last,
batch 256, same process).
"""

from __future__ import annotations

import copy
import dataclasses
import math

import torch
from torch import nn

from cdiflow.errors import ConfigError
from cdiflow.models.blocks import ConvBNAct, conv_block
from cdiflow.models.config import ModelConfig


class PhaseRetrievalCNN(nn.Module):
    """Encoder-decoder of Wu et al. (2021), width and depth from ``ModelConfig``.

    ``forward(modulus, mask=None)`` takes (B, P, P) or (B, 1, P, P) float moduli
    (centred, max 1) and returns (B, 2, N, N): amplitude and phase target, both in [0, 1]
    with the default ``relu_clamp`` output. A model with ``mask_channel`` also takes the
    (B, P, P) mask (True where measured; None: all measured) as a second input channel,
    so it can tell an unmeasured pixel from a measured zero; other models ignore it.
    """

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        c = config
        slope, mom = c.leaky_slope, c.bn_momentum
        self.encoder = nn.ModuleList()
        cin = 2 if c.mask_channel else 1
        for level in range(c.depth):
            self.encoder.append(conv_block(cin, c.level_width(level), slope, mom))
            cin = c.level_width(level)
        self.pool = nn.MaxPool2d(2)
        code = c.level_width(c.depth)
        self.bottleneck = conv_block(cin, code, slope, mom)
        self.amplitude_decoder = self._decoder(code // 2)
        self.phase_decoder = self._decoder(code // 2, 2 if c.phase_head == "angle" else 1)

    def _decoder(self, cin: int, outputs: int = 1) -> nn.Sequential:
        c = self.config
        layers: list[nn.Module] = []
        # Levels depth-1 .. 1: resolution input / 2**level, width of encoder level-1.
        for level in range(c.depth - 1, 0, -1):
            cout = c.level_width(level - 1)
            layers += [nn.Upsample(scale_factor=2, mode="nearest")]
            layers += [conv_block(cin, cout, c.leaky_slope, c.bn_momentum)]
            cin = cout
        head = nn.Conv2d(cin, outputs, 3, padding=1)
        # Start every output pixel near 0.5, inside the linear part of ReLU / clamp:
        # with torch's default init a whole output channel can start (and stay) below 0,
        # where ReLU passes no gradient (seen as an amplitude loss stuck at 1.0).
        with torch.no_grad():
            head.weight.mul_(0.1)
            head.bias.fill_(0.5)  # an angle head starts at (0.5, 0.5): away from (0, 0)
        layers.append(head)
        return nn.Sequential(*layers)

    def _activate(self, x: torch.Tensor) -> torch.Tensor:
        kind = self.config.output_activation
        if kind == "sigmoid":
            return torch.sigmoid(x)
        y = torch.relu(x) if kind == "relu" else torch.clamp(x, 0.0, 1.0)
        leak = self.config.output_gradient_leak
        if leak > 0 and torch.is_grad_enabled():
            # Same value, but a small gradient where ReLU / clamp pass none: without it
            # a whole output channel that drifts below 0 never comes back (seen: the
            # phase head of a width-32 net died for good under AdamW at lr 3e-3).
            y = y + leak * (x - x.detach())
        return y

    def forward(self, modulus: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = modulus.unsqueeze(1) if modulus.dim() == 3 else modulus
        if self.config.mask_channel:
            measured = torch.ones_like(x) if mask is None else mask.reshape(x.shape).to(x.dtype)
            x = torch.cat([x, measured], dim=1)
        for block in self.encoder:
            x = self.pool(block(x))
        code = self.bottleneck(x)
        amp_code, phase_code = torch.chunk(code, 2, dim=1)
        amplitude, phase = self.amplitude_decoder(amp_code), self.phase_decoder(phase_code)
        if self.config.phase_head == "target":
            return self._activate(torch.cat([amplitude, phase], 1))
        amplitude = self._activate(amplitude)
        return torch.cat([amplitude, self._angle_target(phase, amplitude)], 1)

    def _angle_target(self, cs: torch.Tensor, amplitude: torch.Tensor) -> torch.Tensor:
        """(B, 2, N, N) (c, s) -> (B, 1, N, N) target p = (atan2(s, c) + pi) / (2 pi) where
        the amplitude is above ``phase_gate``, else 0 (the target's convention), through
        a ramp of ``phase_gate_width``; float32: the angle must not be taken in bf16."""
        dtype, c = amplitude.dtype, self.config
        cs, amplitude = cs.float(), amplitude.float()
        angle = torch.atan2(cs[:, 1:], cs[:, :1])
        p = ((angle + math.pi) / (2 * math.pi)).clamp(0, 1 - 1e-7)  # phase_to_target's range
        if c.phase_gate_width > 0:
            p = p * ((amplitude - c.phase_gate) / c.phase_gate_width + 0.5).clamp(0, 1)
        else:
            p = torch.where(amplitude > c.phase_gate, p, 0.0)
        return p.to(dtype)


def build_model(config: ModelConfig | None = None, seed: int | None = None) -> PhaseRetrievalCNN:
    """A freshly initialised CNN.

    ``seed`` makes the initialisation a function of the seed alone: torch's default
    initialisers draw from the global generator, so they run inside ``fork_rng``, which
    restores the global state afterwards (the caller's RNG is never touched).
    """
    if seed is None:
        return PhaseRetrievalCNN(config or ModelConfig())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return PhaseRetrievalCNN(config or ModelConfig())


def fold_batchnorm(model: PhaseRetrievalCNN) -> PhaseRetrievalCNN:
    """Fold every BN into its conv, in place (uses running statistics: eval semantics)."""
    for module in model.modules():
        if isinstance(module, ConvBNAct):
            module.fold()
    return model


# Patterns per forward pass. On CPU a batch of 32 keeps each stage's activations (8 MiB
# at the widest) near the caches, and 256 does not: with the shipped model at 1 thread,
# taking turns with the matmul, 60% of the fp32 matmul rate at 32 against 40% at 256
# (benchmarks/results/cnn_inference.json). A GPU wants large batches.
CPU_INFERENCE_BATCH = 32
GPU_INFERENCE_BATCH = 256


def inference_batch(device: str | torch.device = "cpu") -> int:
    """The batch ``CNNReconstructor`` runs the network at on ``device``."""
    return CPU_INFERENCE_BATCH if torch.device(device).type == "cpu" else GPU_INFERENCE_BATCH


def training_layout(model: nn.Module) -> nn.Module:
    """``model`` with its weights in channels_last, in place, ready to train.

    The convolutions then run in the layout oneDNN (CPU) and the tensor cores (GPU)
    prefer, and their activations follow it. The default width-16 model trained 1.66x as
    many samples/s this way at 1 thread and batch 32, in turns with the default layout
    (``benchmarks/results/train_throughput.json``). The maths is unchanged: outputs agree
    to float rounding. Call it before wrapping the model in DDP, so DDP's gradient
    buckets take the weights' strides.
    """
    return model.to(memory_format=torch.channels_last)


def inference_model(model: nn.Module) -> PhaseRetrievalCNN:
    """An inference-optimised copy: BN folded, eval mode, channels_last, no grad.

    The original is untouched. Outputs equal ``model.eval()(x)`` to float tolerance.
    Feed it with ``x.contiguous(memory_format=torch.channels_last)`` of shape (B,1,P,P)
    or plain (B,P,P); both work.
    """
    model = getattr(model, "module", model)  # unwrap DDP
    fast = copy.deepcopy(model).eval()
    fold_batchnorm(fast)
    for p in fast.parameters():
        p.requires_grad_(False)
    for module in fast.modules():
        if isinstance(module, nn.LeakyReLU):
            module.inplace = True
    return fast.to(memory_format=torch.channels_last)


@torch.no_grad()
def with_mask_channel(model: PhaseRetrievalCNN) -> PhaseRetrievalCNN:
    """A copy of ``model`` that also takes the mask, and answers exactly as ``model`` does.

    The new input channel's weights start at zero, so the copy's output does not depend
    on the mask until training moves them: a warm start for the realistic preset from a
    model trained on the paper's mask-free patterns. A model that has the channel already
    is returned as is.
    """
    if model.config.mask_channel:
        return model
    config = dataclasses.replace(model.config, mask_channel=True)
    widened = PhaseRetrievalCNN(config).to(next(model.parameters()).device)
    state = model.state_dict()
    first = "encoder.0.0.convs.0.weight"  # block 0, its 3x3 unit, its conv
    weight = state[first]
    state[first] = torch.cat([weight, torch.zeros_like(weight)], dim=1)
    widened.load_state_dict(state, strict=True)
    return widened.train(model.training)


@torch.no_grad()
def with_angle_head(model: PhaseRetrievalCNN, seed: int = 0) -> PhaseRetrievalCNN:
    """A copy of ``model`` with the ``"angle"`` phase head (``ModelConfig.phase_head``).

    Every weight is kept but the phase decoder's last conv, which now has two outputs
    and starts fresh (from ``seed``): a warm start whose encoder and amplitude decoder
    already know the patterns. A model with the angle head is returned as is.
    """
    if model.config.phase_head == "angle":
        return model
    config = dataclasses.replace(model.config, phase_head="angle")
    angled = build_model(config, seed=seed).to(next(model.parameters()).device)
    state, fresh = model.state_dict(), angled.state_dict()
    for name, value in fresh.items():
        if state[name].shape != value.shape:  # the head: (1, w, 3, 3) -> (2, w, 3, 3)
            state[name] = value
    angled.load_state_dict(state, strict=True)
    return angled.train(model.training)


@torch.no_grad()
def widened(
    model: PhaseRetrievalCNN,
    factor: int,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
) -> PhaseRetrievalCNN:
    """A copy of ``model`` ``factor`` times as wide that answers as ``model`` does (Net2Net).

    Every channel is repeated ``factor`` times in place (``repeat_interleave``, so the
    code's split into amplitude and phase halves still falls between the same channels),
    and every weight that reads widened channels is divided by ``factor``: each copy
    carries an equal share, so sums, BN, LeakyReLU and pooling give the same numbers.
    Exact copies get exact gradients and would stay copies for ever; ``noise`` (relative,
    drawn from ``generator``) breaks the tie at a cost of that size in the answer.
    A warm start with more capacity: a wider net need not relearn what the narrow one has.
    """
    if factor < 1:
        raise ConfigError(f"widening factor must be >= 1, got {factor}")
    config = dataclasses.replace(model.config, base_width=model.config.base_width * factor)
    wide = PhaseRetrievalCNN(config).to(next(model.parameters()).device)
    source, state = model.state_dict(), {}
    for name, new in wide.state_dict().items():
        old = value = source[name]
        for dim in range(old.dim()):
            if new.shape[dim] != old.shape[dim]:
                value = value.repeat_interleave(factor, dim=dim)
                if dim == 1:  # a conv's input channels: each copy gets an equal share
                    value = value / factor
        if noise > 0 and name.endswith("weight") and value.dim() == 4 and factor > 1:
            value = value * (1 + noise * torch.randn(value.shape, generator=generator))
        state[name] = value
    wide.load_state_dict(state, strict=True)
    return wide.train(model.training)
