"""What the training driver does once Ray Train returns: curves, registration, the outcome.

The final weights are registered and the champion rule applied with the val split's
fingerprint (``eval_fingerprint``); a champion scored on another val split is rescored
on this one first (``champion_rescorer``). MLflow, matplotlib and torch are imported
inside functions.
"""

from __future__ import annotations

import dataclasses
import hashlib
import tempfile
from pathlib import Path
from typing import Any

from cdiflow.errors import InputError, NonFiniteScore
from cdiflow.pipelines.data import read_split_arrays
from cdiflow.pipelines.registry import load_model, register_weights
from cdiflow.pipelines.tracking_store import MODEL_NAME, RunLogger
from cdiflow.pipelines.train_config import WEIGHTS_FILE
from cdiflow.reports.evaluation import training_curves


@dataclasses.dataclass(frozen=True)
class TrainOutcome:
    """What a training run produced."""

    name: str
    run_dir: str  # Ray's run folder (checkpoints)
    run_id: str | None  # MLflow run
    tracking_uri: str | None
    epochs_done: int
    metrics: dict[str, float]
    weights: str  # path of the final weights file (inside the last checkpoint)
    promotion: dict | None  # registry version and champion decision

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def finish_run(uri, run_id, status):
    """Mark the MLflow run ended with ``status`` (FINISHED, FAILED)."""
    RunLogger(uri, run_id).finish(status)


CURVES = ("train_loss", "val_loss", "val_chi2_modulus", "val_chi2_amplitude", "val_chi2_phase")


def _log_training_curves(uri: str, run_id: str) -> None:
    """The run's loss and chi^2 curves as ``figures/training_curves.png``."""
    import matplotlib.pyplot as plt

    logger = RunLogger(uri, run_id)
    history = {
        name: [(m.step, m.value) for m in logger.client.get_metric_history(run_id, name)]
        for name in CURVES
    }
    with tempfile.TemporaryDirectory() as folder:
        figure = training_curves(history, Path(folder) / "training_curves.png")
        plt.close(figure)
        logger.log_file(Path(folder) / "training_curves.png", "figures")


def eval_fingerprint(data_dir, split: str = "val") -> str:
    """An id of the evaluation set: sha256 over the manifest's rows and sha256 per shard.

    ``data_dir`` is a data set folder or URI, or a ``DatasetConfig`` generated on the fly
    (then the id of its seed, generator and size: ``train_stream.generated_fingerprint``).

    The manifest already holds every shard file's sha256 (``check_dataset`` verified
    them), so this reads no data. Equal fingerprints mean byte-identical shards; the same
    patterns written by another writer version get a new one, which only costs a
    rescore of the champion, never a wrong comparison.
    """
    # lazy: torch; the Ray driver (pipelines.train) stays torch-free
    from cdiflow.formats.dataset import read_manifest
    from cdiflow.formats.layout import DatasetConfig
    from cdiflow.pipelines.train_stream import generated_fingerprint

    if isinstance(data_dir, DatasetConfig):
        return generated_fingerprint(data_dir, split)
    digest = hashlib.sha256(f"cdiflow eval set: {split}\n".encode())
    for info in read_manifest(data_dir).shards[split]:
        digest.update(f"{info.rows} {info.sha256}\n".encode())
    return f"sha256:{digest.hexdigest()}"


def val_arrays(data_dir) -> dict:
    """The val split as float32 arrays (``mask`` too when masked), read or generated."""
    # lazy: torch; the Ray driver (pipelines.train) stays torch-free
    from cdiflow.formats.layout import DatasetConfig
    from cdiflow.pipelines.train_stream import generated_arrays

    if isinstance(data_dir, DatasetConfig):
        return generated_arrays(data_dir, "val")
    return read_split_arrays(data_dir, "val")


def champion_rescorer(uri: str, data_dir, batch_size: int = 256):
    """``version -> val_chi2`` of a registered version on ``data_dir``'s val split.

    For ``champion.apply_champion_rule``: scores the champion the way the rank-0 worker
    scored the candidate (BatchNorm statistics recomputed from the val inputs, then
    ``evaluate``'s mean modulus chi^2), in this process, float32, on its GPU if it has
    one (a bf16 worker's score can differ in the last digits). The registered weights
    are not changed.
    """

    def rescore(version: str) -> float:
        import torch

        # lazy: torch; the Ray driver (pipelines.train) stays torch-free
        from cdiflow.train.loop import evaluate, recalibrate_batchnorm

        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        model, _, _ = load_model(f"models:/{MODEL_NAME}/{version}", uri)
        model.to(device)
        arrays = val_arrays(data_dir)  # with masks: the masked chi^2 the worker scored
        rows = len(arrays["modulus"])
        batches = [
            {k: torch.from_numpy(v[i : i + batch_size]) for k, v in arrays.items()}
            for i in range(0, rows, batch_size)
        ]
        recalibrate_batchnorm(model, batches, device)
        return float(evaluate(model, batches, device)["chi2_modulus"])

    return rescore


def finish_training(job, result, name, storage, uri, run_id, track, data_dir) -> TrainOutcome:
    """The outcome of a fitted run; when tracked, its curves, registration and end status."""
    checkpoint = result.checkpoint
    if checkpoint is None:
        raise InputError(f"run {name!r} finished without a checkpoint")
    folder = Path(checkpoint.path)
    weights = folder / WEIGHTS_FILE
    metrics = {k: float(v) for k, v in result.metrics.items() if isinstance(v, (int, float))}
    promotion = None
    if track:
        _log_training_curves(uri, run_id)
        if job.run.register:
            try:
                decision = register_weights(
                    uri,
                    run_id,
                    weights,
                    metrics,
                    fingerprint=eval_fingerprint(data_dir),
                    rescore=champion_rescorer(uri, data_dir),
                )
            except NonFiniteScore:  # a diverged run: refused, and the run says so
                finish_run(uri, run_id, "FAILED")
                raise
            promotion = decision.to_dict()
            RunLogger(uri, run_id).log_dict(promotion, "champion_decision.json")
        finish_run(uri, run_id, "FINISHED")
    return TrainOutcome(
        name=name,
        run_dir=str(storage / name),
        run_id=run_id,
        tracking_uri=uri,
        epochs_done=int(metrics.get("epoch", -1)) + 1,
        metrics=metrics,
        weights=str(weights),
        promotion=promotion,
    )
