"""Typed architecture config of the CNN (what the registry stores next to the weights)."""

from __future__ import annotations

import dataclasses

from cdiflow.config import Config, require

OUTPUT_ACTIVATIONS = ("relu_clamp", "relu", "sigmoid")
PHASE_HEADS = ("target", "angle")


@dataclasses.dataclass(frozen=True)
class ModelConfig(Config):
    """Architecture of ``PhaseRetrievalCNN``.

    Attributes
    ----------
    input_size : P, pixels per axis of the input modulus (64).
    output_size : N, pixels per axis of the amplitude / phase output (P // 2).
    base_width : channels of the first encoder level; level i has ``base_width * 2**i``.
    depth : number of max-pooling steps in the encoder (64 -> 8 for depth 3). The
        decoders upsample ``depth - 1`` times, back to ``output_size``.
    leaky_slope : negative slope of every LeakyReLU.
    output_activation : ``"relu_clamp"`` (default: the paper's ReLU followed by a clamp at
        1, so targets in [0, 1] are reachable exactly, including the 0 outside the
        support, and the output never leaves [0, 1]), ``"relu"`` (the paper, unbounded
        above) or ``"sigmoid"`` (bounded, but 0 only asymptotically).
    bn_momentum : BatchNorm running-statistics momentum (torch convention).
    output_gradient_leak : slope of the gradient (not the value) of the ReLU / clamp
        output where it is flat, so a dead output channel can recover; 0 gives the
        paper's exact ReLU gradient. Outputs are unchanged.
    mask_channel : take the detector mask as a second input channel (for data with a
        beamstop and gaps, the realistic preset); off in the paper.
    phase_head : ``"target"`` (the paper: one channel, the phase target p regressed
        directly) or ``"angle"`` (two channels (c, s), p from their angle). The phase
        spans 2 pi inside a particle, so the target jumps from 1 to 0 along wrap lines,
        which a smooth regression blurs to p ~ 0.5, a phase wrong by pi: on the shipped
        target-head model those ~10 pixels per pattern carry 75% of the phase error. The
        angle of a smooth (c, s) field wraps sharply.
    phase_gate : with ``"angle"``, p is 0 where the predicted amplitude is at or below
        this, as the generator sets the target (its ``support_threshold``).
    phase_gate_width : with ``"angle"``, the gate is a linear ramp this wide in amplitude,
        centred on ``phase_gate`` (0: a step). Whether an edge pixel is in the support
        is uncertain, and a step then costs the whole of p^2 (the squared error of the
        paper's phase metric), a ramp about half; the phase it scales is that of pixels
        of amplitude ~0.1, which changes the object little.
    """

    input_size: int = 64
    output_size: int = 32
    base_width: int = 16
    depth: int = 3
    leaky_slope: float = 0.01
    output_activation: str = "relu_clamp"
    bn_momentum: float = 0.1
    output_gradient_leak: float = 0.01
    mask_channel: bool = False
    phase_head: str = "target"
    phase_gate: float = 0.1
    phase_gate_width: float = 0.0

    def validate(self) -> None:
        require(self.base_width >= 1, f"base_width must be >= 1, got {self.base_width}")
        require(self.depth >= 1, f"depth must be >= 1, got {self.depth}")
        require(
            self.input_size > 0 and self.input_size % (2**self.depth) == 0,
            f"input_size {self.input_size} must be a positive multiple of 2**depth "
            f"({2**self.depth})",
        )
        require(
            self.output_size * 2 == self.input_size,
            f"output_size must be input_size // 2 (oversampling 2), got "
            f"{self.output_size} for input {self.input_size}",
        )
        require(0 <= self.leaky_slope < 1, f"leaky_slope must be in [0, 1), got {self.leaky_slope}")
        require(
            self.output_activation in OUTPUT_ACTIVATIONS,
            f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got "
            f"{self.output_activation!r}",
        )
        require(
            self.phase_head in PHASE_HEADS,
            f"phase_head must be one of {PHASE_HEADS}, got {self.phase_head!r}",
        )
        require(0 <= self.phase_gate < 1, f"phase_gate must be in [0, 1), got {self.phase_gate}")
        require(
            0 <= self.phase_gate_width <= 2 * self.phase_gate,
            f"phase_gate_width must be in [0, 2 phase_gate], got {self.phase_gate_width}",
        )
        require(0 < self.bn_momentum <= 1, f"bn_momentum must be in (0, 1], got {self.bn_momentum}")
        require(
            0 <= self.output_gradient_leak < 1,
            f"output_gradient_leak must be in [0, 1), got {self.output_gradient_leak}",
        )

    def level_width(self, level: int) -> int:
        """Channels of encoder level ``level`` (0 = full resolution)."""
        return self.base_width * 2**level
