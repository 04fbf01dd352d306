"""``cdiflow quickstart``: the whole platform once, on a local Ray and an embedded MLflow.

Steps, all inside one workspace folder (re-running reuses what is there):

1. generate a small synthetic data set (``WORKSPACE/data``; Ray Data);
2. train a small CNN briefly (Ray Train) -- skipped when the workspace registry already
   has a ``champion`` (the cached model);
3. register it as ``cdiflow-cnn`` and make it champion (the champion rule);
4. write a small synthetic beamtime in the 34-ID-C layout (``WORKSPACE/beamtimes``) and
   reconstruct it, plus every ``--beamtime`` folder given (``WORKSPACE/reports/<name>``);
5. write ``WORKSPACE/report.html`` linking the beamtime reports, and say where it is.

Sizes are chosen to finish in well under 10 minutes on a 2-core machine; ``smoke``
shrinks everything for CI.

The quickstart starts its own local Ray (``ray_init_kwargs``), also in a shell prepared
for a cluster (``RAY_ADDRESS`` set, or ``ray start`` running on this machine): only an
explicit ``address`` sends it to a cluster.
"""

from __future__ import annotations

import dataclasses
import html
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cdiflow.beamtime.results import atomic_write_bytes
from cdiflow.beamtime.results import scan_key as safe_name
from cdiflow.config import Config, require
from cdiflow.errors import InputError, ModelNotFound
from cdiflow.formats.aps34idc_writer import write_synthetic_beamtime
from cdiflow.pipelines.cluster import connect
from cdiflow.pipelines.tracking import (
    CHAMPION,
    MODEL_NAME,
    PRETRAINED_TAG,
    configure,
    resolve_version,
)

SYNTHETIC_SEED = 2026  # the quickstart's synthetic beamtime is always the same
RUN_NAME = "quickstart"
LOCAL_CPUS = 2
LOCAL_OBJECT_STORE_BYTES = 200 * 1024**2


def ray_init_kwargs(address: str | None) -> dict:
    """Keyword arguments of ``ray.init`` for the quickstart's Ray.

    ``address`` None (or ``"local"``): a new local Ray of ``LOCAL_CPUS`` CPUs, a capped
    object store and no dashboard, with ``address="local"``. Without that ``ray.init``
    would join the cluster that ``RAY_ADDRESS`` names, or the newest ``ray start`` on
    this machine, so ``RAY_ADDRESS`` in the environment is deliberately ignored here.
    Any other address (``auto``, ``host:port``, ``ray://host:port``): that cluster,
    with no local sizes.
    """
    if address is None or address == "local":
        return {
            "address": "local",
            "num_cpus": LOCAL_CPUS,
            "include_dashboard": False,
            "object_store_memory": LOCAL_OBJECT_STORE_BYTES,
        }
    return {"address": address}


@dataclasses.dataclass(frozen=True)
class QuickstartConfig(Config):
    """Sizes of the quickstart (defaults: under 10 minutes on 2 cores)."""

    patterns: int = 1600  # train + validation patterns
    test_patterns: int = 64
    epochs: int = 5
    batch_size: int = 64
    base_width: int = 16
    lr: float = 3e-3
    scans: int = 4  # scans of the synthetic beamtime
    frames: int = 16  # rocking steps per synthetic scan
    schedule: str = "5*(100*HIO+20*ER)"  # the paper's 600 iterations
    shrinkwrap_start: int = 100

    def validate(self) -> None:
        require(self.patterns >= 40, "patterns must be >= 40")
        require(self.epochs >= 1 and self.batch_size >= 1, "epochs, batch_size >= 1")
        require(self.scans >= 1 and self.frames >= 1, "scans, frames >= 1")

    @classmethod
    def smoke(cls) -> QuickstartConfig:
        """CI size: a minute or two on 2 cores."""
        return cls(
            patterns=160,
            test_patterns=16,
            epochs=1,
            batch_size=32,
            base_width=8,
            scans=2,
            frames=8,
            schedule="2*(20*HIO+10*ER)",
            shrinkwrap_start=10,
        )


@dataclasses.dataclass(frozen=True)
class QuickstartOutcome:
    workspace: Path
    report: Path
    model: str  # the registry version used
    trained: bool  # False: the cached champion was reused
    beamtimes: dict[str, dict]  # name -> {"report", "ok", "failed", "seconds"}
    seconds: dict[str, float]  # wall time per step


def _trained_here(uri: str) -> str | None:
    """The newest version trained in this registry (not the shipped model), or None."""
    from mlflow import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    versions = client.search_model_versions(f"name='{MODEL_NAME}'")
    mine = [int(v.version) for v in versions if v.tags.get(PRETRAINED_TAG) != "true"]
    return str(max(mine)) if mine else None


def _champion(uri: str) -> str | None:
    """The champion's version in this registry, or None."""
    try:
        return str(resolve_version(uri, f"models:/{MODEL_NAME}@{CHAMPION}").version)
    except ModelNotFound:
        return None


def _generate(config: QuickstartConfig, data: Path) -> None:
    # lazy: torch, like ray and mlflow here
    from cdiflow.formats.layout import DatasetConfig
    from cdiflow.pipelines.generate import generate_dataset

    dataset = DatasetConfig(
        seed=0, num_patterns=config.patterns, test_patterns=config.test_patterns, shards=2
    )
    generate_dataset(dataset, data, workers=2, progress=False)


def _train(config: QuickstartConfig, data: Path, workspace: Path) -> str:
    # lazy: torch, like ray and mlflow here
    from cdiflow.models import ModelConfig
    from cdiflow.pipelines.train import RunSettings, ScalingSettings, TrainJobConfig, run_training
    from cdiflow.train import TrainConfig

    job = TrainJobConfig(
        model=ModelConfig(base_width=config.base_width),
        train=TrainConfig.recommended(
            epochs=config.epochs, batch_size=config.batch_size, lr=config.lr
        ),
        scaling=ScalingSettings(workers=1, cpus_per_worker=0.5, torch_threads=2),
        run=RunSettings(max_failures=1, checkpoints_to_keep=1),
    )
    runs = workspace / "runs"
    resume = (runs / RUN_NAME).exists()  # a quickstart killed while training goes on
    outcome = run_training(job, data, workspace, name=RUN_NAME, resume=resume)
    if outcome.promotion is None:
        raise RuntimeError("training finished without registering a model")
    return str(outcome.promotion["version"])


def _synthetic_beamtime(config: QuickstartConfig, root: Path) -> Path:
    # lazy: torch, like ray and mlflow here
    from cdiflow.physics.beamtime import SyntheticBeamtimeConfig

    folder = root / "synthetic"
    marker = folder / ".complete"
    if marker.is_file() and marker.read_text() == json.dumps(config.to_dict()):
        return folder
    if folder.exists():
        shutil.rmtree(folder)
    write_synthetic_beamtime(
        folder,
        SyntheticBeamtimeConfig(scans=config.scans, frames=config.frames),
        np.random.default_rng(SYNTHETIC_SEED),
    )
    marker.write_text(json.dumps(config.to_dict()))
    return folder


def run_quickstart(
    workspace: str | Path,
    beamtimes: list[str | Path] = (),
    config: QuickstartConfig | None = None,
    say: Callable[[str], None] = print,
    address: str | None = None,
) -> QuickstartOutcome:
    """Run the quickstart (module docstring).

    Starts a local Ray and shuts it down after, whatever ``RAY_ADDRESS`` says; with
    ``address`` it connects to that cluster instead (``cluster.connect``: a one-line
    ``ClusterUnavailable`` when it does not answer). A Ray already initialised in this
    process is used as is.
    """
    import ray

    config = config or QuickstartConfig()
    workspace = Path(workspace).expanduser().resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    missing = [str(b) for b in beamtimes if not Path(b).is_dir()]
    if missing:
        raise InputError(f"--beamtime folder(s) not found: {missing}")
    uri = configure(workspace)
    seconds: dict[str, float] = {}
    started = not ray.is_initialized()
    if started:
        _start_ray(address)
    try:
        version, trained = _model(config, workspace, uri, say, seconds)
        t = time.perf_counter()
        results = _reconstruct_all(config, workspace, beamtimes, version, say)
        seconds["reconstruct"] = time.perf_counter() - t
    finally:
        if started:
            ray.shutdown()
    report = _write_index(workspace, version, trained, results, seconds)
    say(f"[5/5] report: {report}")
    return QuickstartOutcome(workspace, report, version, trained, results, seconds)


def _start_ray(address: str | None) -> None:
    """``ray.init(**ray_init_kwargs(address))``, through ``cluster.connect`` (quiet_ray)."""
    kwargs = ray_init_kwargs(address)
    if kwargs["address"] == "local":
        connect(
            "local",
            num_cpus=kwargs["num_cpus"],
            object_store_memory=kwargs["object_store_memory"],
            dashboard=kwargs["include_dashboard"],
        )
    else:
        connect(kwargs["address"])  # probes the address first


def _model(config, workspace: Path, uri: str, say, seconds: dict) -> tuple[str, bool]:
    """(champion version, whether it was trained now): steps 1-3, timed into ``seconds``."""
    t = time.perf_counter()
    version = _champion(uri)  # in a new workspace: the shipped model
    trained = _trained_here(uri) is None
    if not trained:
        say(f"[1-3/5] the workspace registry has a champion (version {version}): reusing it")
        return version, trained
    say("[1/5] generating a small synthetic data set ...")
    _generate(config, workspace / "data")
    seconds["generate"] = time.perf_counter() - t
    say(f"[2/5] training a small CNN ({config.epochs} epochs) ...")
    t = time.perf_counter()
    mine = _train(config, workspace / "data", workspace)
    seconds["train+register"] = time.perf_counter() - t
    version = _champion(uri)
    verdict = "champion" if mine == version else f"champion stays version {version}"
    say(f"[3/5] registered cdiflow-cnn version {mine} ({verdict})")
    return version, trained


def _reconstruct_all(config, workspace: Path, beamtimes, version: str, say) -> dict:
    """Step 4: the synthetic beamtime and every ``beamtimes`` folder; a summary per folder."""
    # lazy: torch, like ray and mlflow here
    from cdiflow.beamtime.config import ReconstructConfig
    from cdiflow.phasing.shrinkwrap import ShrinkWrap
    from cdiflow.pipelines.reconstruct import reconstruct_beamtime

    synthetic = _synthetic_beamtime(config, workspace / "beamtimes")
    recon = ReconstructConfig(
        schedule=config.schedule, shrinkwrap=ShrinkWrap(start=config.shrinkwrap_start)
    )
    results = {}
    for folder in [synthetic, *[Path(b).resolve() for b in beamtimes]]:
        name = safe_name(folder.name)
        say(f"[4/5] reconstructing {folder} ...")
        out = workspace / "reports" / name
        outcome = reconstruct_beamtime(
            [folder], out, model=version, workspace=workspace, config=recon, progress=say
        )
        results[name] = {
            "source": str(folder),
            "report": str(outcome.report),
            "ok": len(outcome.ok),
            "failed": len(outcome.failed),
            "seconds": round(outcome.seconds, 1),
            "refined_chi2": [r["refined_chi2"] for r in outcome.ok],
        }
    return results


# Figures the training and evaluate steps leave in the workspace, by the file name MLflow
# keeps them under (``<workspace>/mlartifacts/<run>/artifacts/<folder>/<name>``, the
# embedded store's artifacts) or that ``cdiflow evaluate --out WORKSPACE/<folder>``
# writes; the newest of each is shown, nothing is recomputed.
INDEX_FIGURES = (
    ("Training curves (loss and validation chi^2 per epoch)", "figures", "training_curves.png"),
    ("Fig. 3: chi^2 histograms of the test set", "evaluation", "chi2_histograms.png"),
    ("Fig. 4: test patterns, truth and CNN", "evaluation", "samples.png"),
)


def _index_figures(workspace: Path) -> list[tuple[str, str]]:
    """(caption, path relative to ``workspace``) of each ``INDEX_FIGURES`` found."""
    found = []
    for caption, folder, name in INDEX_FIGURES:
        paths = [
            *workspace.glob(f"mlartifacts/*/artifacts/{folder}/{name}"),
            *workspace.glob(f"mlartifacts/*/*/artifacts/{folder}/{name}"),
            *workspace.glob(f"*/{name}"),
        ]
        paths = [p for p in paths if p.is_file()]
        if paths:
            newest = max(paths, key=lambda p: (p.stat().st_mtime, p.as_posix()))
            found.append((caption, newest.relative_to(workspace).as_posix()))
    return found


def _figures_section(workspace: Path) -> str:
    e = html.escape
    figures = _index_figures(workspace)
    if not figures:
        return (
            "<h2>Model</h2><p>No training or evaluation figures in this workspace (the "
            "model was not trained here; <code>cdiflow evaluate</code> draws Fig. 3 and 4)."
            "</p>"
        )
    parts = ["<h2>Model</h2>"]
    for caption, rel in figures:
        src = e(rel, quote=True)
        parts.append(
            f"<figure style='margin:0 0 1em 0'><a href='{src}'><img src='{src}' "
            f"alt='{e(caption, quote=True)}' style='max-width:min(100%, 900px)'></a>"
            f"<figcaption>{e(caption)}</figcaption></figure>"
        )
    return "".join(parts)


def _write_index(workspace: Path, version: str, trained: bool, results: dict, seconds) -> Path:
    """``WORKSPACE/report.html``: the model, its training and evaluation figures (those in
    the workspace, ``INDEX_FIGURES``) and links to the beamtime reports."""
    e = html.escape
    items = []
    for name, info in results.items():
        rel = Path(info["report"]).relative_to(workspace).as_posix()
        items.append(
            f"<li><a href='{e(rel, quote=True)}'>{e(name)}</a>: {info['ok']} ok, "
            f"{info['failed']} failed ({e(info['source'])})</li>"
        )
    timing = ", ".join(f"{k} {v:.0f} s" for k, v in seconds.items())
    page = (
        "<!doctype html><html><head><meta charset='utf-8'><title>cdiflow quickstart</title>"
        "</head><body style='font-family:sans-serif'><h1>cdiflow quickstart</h1>"
        f"<p>Model: cdiflow-cnn version {e(version)} "
        f"({'trained now' if trained else 'cached champion'}); MLflow store: "
        f"{e(str(workspace / 'mlflow.db'))}</p><p>Time: {e(timing)}</p>"
        f"<h2>Beamtimes</h2><ul>{''.join(items)}</ul>{_figures_section(workspace)}"
        "</body></html>\n"
    )
    path = workspace / "report.html"
    atomic_write_bytes(path, page.encode())
    return path
