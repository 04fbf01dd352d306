"""The shipped CNN: ``cnn.pt`` (weights + typed config, no pickled code) and ``cnn.json``.

``--model pretrained`` in every verb names this file. A new workspace registers it as
``cdiflow-cnn`` version 1 with alias ``champion`` the first time a verb looks a registry
model up (``cdiflow.pipelines.tracking.ensure_pretrained``), so the quickstart and
``reconstruct`` use it at once, and a model trained later must beat it on the same data
to take the alias. ``cnn.json`` says how the weights were trained and what they score
(``benchmarks/pretrained_eval.py`` writes the scores to ``benchmarks/results``).

A second model, ``cnn_realistic.pt`` (``--model pretrained-realistic``), was trained on
the realistic preset (Poisson counts, background, beamstop and gap masks, edge
smoothing; ``cdiflow.physics.variation``) and takes the mask as a second input channel:
the one to try on measured scans. Its card ``cnn_realistic.json`` scores it on both
presets.

Nothing is read at import.
"""

from __future__ import annotations

from pathlib import Path

NAME = "pretrained"
"""What ``--model`` takes to mean this model."""

WEIGHTS = Path(__file__).resolve().parent / "cnn.pt"
CARD = WEIGHTS.with_suffix(".json")

REALISTIC_NAME = "pretrained-realistic"
REALISTIC_WEIGHTS = WEIGHTS.with_name("cnn_realistic.pt")

SHIPPED = {NAME: WEIGHTS, REALISTIC_NAME: REALISTIC_WEIGHTS}
"""``--model`` name -> shipped weights file."""


def available() -> bool:
    """True if the package carries the weights file (a source checkout always does)."""
    return WEIGHTS.is_file()
