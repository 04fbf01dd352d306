"""Evaluate a trained CNN on a held-out split: per-pattern chi^2, Gamma fits, figures, MLflow.

Errors per pattern (the paper's Fig. 3), computed by ``cdiflow.train.loop.per_pattern_metrics``:

- modulus: chi^2 (eq. 5) between |F| of the predicted object padded to P x P and the
  input modulus, with the least-squares scale fitted (the input is max-normalised, the
  prediction's scale is free);
- amplitude, phase: the normalised real-space error sum (x_p - x_g)^2 / sum x_g^2 of the
  amplitude image and of the phase target in [0, 1].

Note the floor: even the ground truth does not score modulus chi^2 = 0, because the
phase target is 0 (-pi) outside the support (amplitude below the support threshold), so
the faint halo's phase is lost; on the default generator it is about 0.002-0.01.

Each distribution is fitted with a Gamma law (location 0); its mean is the summary the
paper quotes.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from cdiflow.formats.location import Location
from cdiflow.models.cnn import inference_model
from cdiflow.models.reconstructor import CNNReconstructor
from cdiflow.pipelines.data import read_split_arrays, validate_split
from cdiflow.pipelines.tracking import EXPERIMENT, RunLogger, configure, experiment_id, load_model
from cdiflow.reports.evaluation import chi2_histograms, sample_panel
from cdiflow.train.loop import per_pattern_metrics

PANEL_SAMPLES = 6


def predict(
    model, modulus: np.ndarray, mask: np.ndarray | None = None, batch_size: int | None = None
) -> np.ndarray:
    """Run the model on (B, P, P) float32 moduli; returns (B, 2, N, N) float32 on CPU.

    ``mask`` ((P, P) or (B, P, P), nonzero = measured) reaches a model with a mask channel.
    The network runs as its inference copy (BN folded, channels_last; ``model`` is not
    touched) at ``batch_size`` patterns a pass (default: ``inference_batch``).
    """
    cnn = CNNReconstructor(inference_model(model), batch_size=batch_size)
    mask = None if mask is None else np.asarray(mask) != 0
    return cnn.predict(np.ascontiguousarray(modulus), mask).numpy()


def load_predictions(
    ref: str, workspace: str, modulus: np.ndarray, mask: np.ndarray | None = None
) -> tuple[np.ndarray, ...]:
    """CNN amplitude and phase targets (B, N, N) for (B, P, P) moduli from a model reference.

    ``ref`` is a registry reference (``models:/cdiflow-cnn@champion``) resolved against
    ``MLFLOW_TRACKING_URI`` or the workspace's store, or a weights file. ``mask`` as in
    ``predict``.
    """
    uri = configure(workspace) if ref.startswith("models:/") else None
    model, _config, _provenance = load_model(ref, uri)
    out = predict(model, modulus, mask)
    return out[:, 0], out[:, 1]


ERROR_KINDS = ("modulus", "amplitude", "phase", "amplitude_twin_aware", "phase_twin_aware")
"""Per-pattern errors evaluate reports; ``*_twin_aware`` against the closer of target and
twin (|F| cannot tell them apart), the fair score of a prediction and the headline."""


def pattern_errors(model, arrays: dict[str, np.ndarray], batch_size: int = 256):
    """Per-pattern errors {kind: (B,) float64} for every kind in ``ERROR_KINDS``.

    ``arrays``: modulus (B, P, P), amplitude and phase targets (B, N, N), float32, and
    ``mask`` (B, P, P) when the data are masked: the model sees it and the modulus chi^2
    counts only measured pixels. The numbers come from
    ``cdiflow.train.loop.per_pattern_metrics`` (the same code that scores validation
    during training).
    """
    import torch

    device = next(model.parameters()).device
    count = arrays["modulus"].shape[0]
    batches = (
        {k: torch.from_numpy(v[start : start + batch_size]) for k, v in arrays.items()}
        for start in range(0, count, batch_size)
    )
    values = per_pattern_metrics(model, batches, device)
    return {kind: values[f"chi2_{kind}"].double().numpy() for kind in ERROR_KINDS}


def gamma_fit(values: np.ndarray) -> dict[str, float]:
    """Gamma fit with location 0: shape, scale, its mean, plus the sample mean and median."""
    from scipy import stats

    values = np.asarray(values, dtype=np.float64)
    positive = values[np.isfinite(values) & (values > 0)]
    summary = {
        "sample_mean": float(np.mean(values)),
        "median": float(np.median(values)),
        "count": int(values.size),
    }
    if positive.size < 3 or np.ptp(positive) == 0:
        return {**summary, "shape": math.nan, "scale": math.nan, "mean": summary["sample_mean"]}
    shape, _, scale = stats.gamma.fit(positive, floc=0)
    return {**summary, "shape": float(shape), "scale": float(scale), "mean": float(shape * scale)}


def evaluate_model(
    ref: str,
    data_dir: str | Path,
    out_dir: str | Path,
    uri: str | None = None,
    split: str = "test",
    limit: int | None = None,
    log: bool = True,
) -> dict[str, Any]:
    """Load ``ref``, evaluate on ``data_dir/split``, write figures + JSON, log to MLflow.

    ``data_dir`` is a data set folder or an object-storage URI (``s3://bucket/prefix``).

    Returns the summary dict that is written to ``out_dir/evaluation.json``.
    """
    validate_split(data_dir, split)
    model, config, provenance = load_model(ref, uri=uri)
    arrays = read_split_arrays(data_dir, split, limit=limit)
    errors = pattern_errors(model, arrays)
    shown = min(PANEL_SAMPLES, arrays["modulus"].shape[0])
    mask = arrays.get("mask")
    prediction = predict(model, arrays["modulus"][:shown], None if mask is None else mask[:shown])
    fits = {kind: gamma_fit(values) for kind, values in errors.items()}

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hist = chi2_histograms(errors, fits, out / "chi2_histograms.png")
    panel = sample_panel(
        arrays["modulus"][:shown],
        arrays["amplitude"][:shown],
        arrays["phase"][:shown],
        prediction[:shown],
        out / "samples.png",
    )
    summary = {
        "model": {k: v for k, v in provenance.items() if k != "tags"},
        "model_config": config.to_dict(),
        "data": str(Location.parse(data_dir).resolve()),
        "split": split,
        "patterns": int(arrays["modulus"].shape[0]),
        "masked": mask is not None,
        "gamma_fits": fits,
        "errors": {k: v.tolist() for k, v in errors.items()},
    }
    (out / "evaluation.json").write_text(json.dumps(summary, indent=1))
    if log:
        summary["mlflow_run_id"] = _log_evaluation(summary, out, uri, provenance)
        (out / "evaluation.json").write_text(json.dumps(summary, indent=1))
    import matplotlib.pyplot as plt

    plt.close(hist)
    plt.close(panel)
    return summary


def _log_evaluation(summary, out: Path, uri, provenance) -> str | None:
    """One MLflow run with the numbers and figures, tagged with the model version."""
    import mlflow

    uri = uri or mlflow.get_tracking_uri()
    workspace = None
    if uri.startswith("sqlite:///"):
        workspace = Path(uri[len("sqlite:///") :]).parent
    exp = experiment_id(uri, EXPERIMENT, workspace=workspace)
    tags = {"cdiflow.kind": "evaluate", "model_ref": provenance["ref"]}
    for key in ("name", "version", "run_id"):
        if provenance.get(key):
            tags[f"model_{key}"] = str(provenance[key])
    logger = RunLogger.start(
        uri, exp, f"evaluate {provenance['ref']}", {"data": summary["data"]}, {}, tags=tags
    )
    metrics = {}
    for kind, fit in summary["gamma_fits"].items():
        metrics[f"test_{kind}_chi2_gamma_mean"] = fit["mean"]
        metrics[f"test_{kind}_chi2_mean"] = fit["sample_mean"]
        metrics[f"test_{kind}_chi2_median"] = fit["median"]
    logger.log_epoch(0, metrics)
    for name in ("chi2_histograms.png", "samples.png", "evaluation.json"):
        logger.log_file(out / name, "evaluation")
    logger.finish()
    return logger.run_id
