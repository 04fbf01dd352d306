"""MLflow tracking and the model registry for cdiflow.

Tracking store: ``MLFLOW_TRACKING_URI`` when set (a real ``mlflow server``), otherwise an
embedded SQLite store inside the workspace folder (``sqlite:///<workspace>/mlflow.db``,
artifacts in ``<workspace>/mlartifacts``). Nothing happens at import: mlflow is imported
inside the functions and folders are created only when a function that needs them runs.

Registry: the model ``cdiflow-cnn``. A version's artifact is the weights file written by
``cdiflow.models.save_weights`` (tensors plus the typed architecture config), never a
pickled module, so loading a version never runs code from the store. Its metrics are
kept as version tags. The alias ``champion`` moves to a new version only when that
version's validation chi^2 is lower than the current champion's, measured on the same
evaluation set (the version tag ``eval_fingerprint``; the caller rescores the champion
when the sets differ); the comparison is recorded as tags on the new version either way.
A non-finite score is refused; a champion without a finite score counts as infinitely bad.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from cdiflow import pretrained
from cdiflow.errors import ModelNotFound, NonFiniteScore

MODEL_NAME = "cdiflow-cnn"
CHAMPION = "champion"
DEFAULT_MODEL = f"models:/{MODEL_NAME}@{CHAMPION}"  # what "no model named" means
EXPERIMENT = "cdiflow"
WEIGHTS_ARTIFACT_DIR = "weights"  # run artifact folder that holds the weights file
WEIGHTS_FILE = "model.pt"  # name of the weights file inside that folder
SCORE_METRIC = "val_chi2"  # lower is better; decides the champion
FINGERPRINT_TAG = "eval_fingerprint"  # version tag: the set SCORE_METRIC was measured on
PRETRAINED_TAG = "cdiflow.pretrained"  # version tag "true": the model shipped in the package


# --- tracking store --------------------------------------------------------------------


def tracking_uri(workspace: str | Path) -> str:
    """The tracking URI: ``MLFLOW_TRACKING_URI`` if set, else the workspace's SQLite store.

    The workspace folder is created when the embedded store is used.
    """
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    root = Path(workspace).expanduser().resolve()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


def is_embedded(uri: str) -> bool:
    """True for a local SQLite store (artifacts then live in the workspace)."""
    return uri.startswith("sqlite:")


def configure(workspace: str | Path) -> str:
    """Point mlflow at this workspace's store (or at ``MLFLOW_TRACKING_URI``); return the URI."""
    import mlflow

    uri = tracking_uri(workspace)
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


def experiment_id(uri: str, name: str = EXPERIMENT, workspace: str | Path | None = None) -> str:
    """Get or create the experiment; an embedded store keeps its artifacts in the workspace."""
    from mlflow import MlflowClient

    client = MlflowClient(uri, registry_uri=uri)
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = None
    if is_embedded(uri) and workspace is not None:
        folder = Path(workspace).expanduser().resolve() / "mlartifacts"
        location = folder.as_uri()
    return client.create_experiment(name, artifact_location=location)


def git_sha(start: str | Path | None = None) -> str | None:
    """The commit of the checkout that holds cdiflow (or ``start``), if it is a git tree."""
    where = Path(start) if start else Path(__file__).resolve().parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    sha = out.stdout.strip()
    return sha or None


def flatten(data: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """Nested dict -> {"a.b": "value"} of strings, for MLflow params."""
    flat: dict[str, str] = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, prefix=f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


# --- per-run logging (rank 0 only) ------------------------------------------------------


class RunLogger:
    """Logs one training run: config, git SHA and seeds once; metrics and figures per epoch.

    Built from a tracking URI and a run id, so the driver can create the run and the rank-0
    worker can log into it from another process. Only rank 0 may construct one.
    """

    def __init__(self, uri: str, run_id: str):
        from mlflow import MlflowClient

        self.uri = uri
        self.run_id = run_id
        self.client = MlflowClient(uri, registry_uri=uri)

    @classmethod
    def start(
        cls,
        uri: str,
        experiment: str,
        run_name: str,
        config: Mapping[str, Any],
        seeds: Mapping[str, int],
        tags: Mapping[str, str] | None = None,
    ) -> RunLogger:
        """Create a run and log the whole config (flattened params + config.json)."""
        from mlflow import MlflowClient

        client = MlflowClient(uri, registry_uri=uri)
        all_tags = {"mlflow.runName": run_name, **(tags or {})}
        sha = git_sha()
        if sha:
            all_tags["git_sha"] = sha
        run = client.create_run(experiment, run_name=run_name, tags=all_tags)
        logger = cls(uri, run.info.run_id)
        logger.log_config(config, seeds)
        return logger

    def log_config(self, config: Mapping[str, Any], seeds: Mapping[str, int]) -> None:
        from mlflow.entities import Param

        params = flatten(config)
        params.update({f"seed.{k}": str(v) for k, v in seeds.items()})
        items = [Param(k, v[:6000]) for k, v in params.items()]
        for start in range(0, len(items), 100):  # MLflow caps a batch at 100 params
            self.client.log_batch(self.run_id, params=items[start : start + 100])
        self.client.log_dict(
            self.run_id, {"config": dict(config), "seeds": dict(seeds)}, "config.json"
        )

    def log_epoch(self, epoch: int, metrics: Mapping[str, float]) -> None:
        """Log every finite number in ``metrics`` with step = epoch."""
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [
            Metric(k, float(v), now, int(epoch))
            for k, v in metrics.items()
            if isinstance(v, (int, float)) and math.isfinite(float(v))
        ]
        if items:
            self.client.log_batch(self.run_id, metrics=items)

    def log_figure(self, figure, name: str) -> None:
        """Log a matplotlib figure as an artifact (``figures/<name>``)."""
        self.client.log_figure(self.run_id, figure, f"figures/{name}")

    def log_file(self, path: str | Path, folder: str | None = None) -> None:
        self.client.log_artifact(self.run_id, str(path), folder)

    def log_dict(self, data: Mapping[str, Any], name: str) -> None:
        self.client.log_dict(self.run_id, dict(data), name)

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.run_id, status=status)


# --- registry --------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Promotion:
    """The outcome of registering a version and applying the champion rule.

    ``champion_score`` is what the new version was compared against: the champion's
    recorded score, or its score on the new version's evaluation set when it was rescored
    (``champion_rescored``; ``rescored_fingerprint`` names that set). None when there was
    no champion, or when its score is unusable (missing, NaN or inf: counted as
    infinitely bad). ``reason`` says in words why the alias moved or stayed.
    """

    name: str
    version: str
    score: float
    champion_version: str | None  # the champion before this decision
    champion_score: float | None
    promoted: bool
    eval_fingerprint: str | None = None  # of the set ``score`` was measured on
    champion_fingerprint: str | None = None  # the champion's recorded one
    champion_recorded_score: float | None = None  # the champion's own val_chi2 tag
    champion_rescored: bool = False
    rescored_fingerprint: str | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _finite_score(value: Any) -> float:
    """``value`` as a finite float, or ``NonFiniteScore`` (nothing ranks against NaN)."""
    try:
        score = float(value)
    except (TypeError, ValueError):
        raise NonFiniteScore(f"{SCORE_METRIC} must be a number, got {value!r}") from None
    if not math.isfinite(score):
        raise NonFiniteScore(
            f"{SCORE_METRIC} is {score}: a non-finite validation score cannot rank models "
            "(the run probably diverged); nothing was registered"
        )
    return score


def _tag_score(tag: str | None) -> float | None:
    """A champion's recorded score tag as a finite float, or None (missing / nan / inf)."""
    try:
        score = float(tag) if tag is not None else math.nan
    except ValueError:
        return None
    return score if math.isfinite(score) else None


def register_weights(
    uri: str,
    run_id: str,
    weights_path: str | Path,
    metrics: Mapping[str, float],
    name: str = MODEL_NAME,
    fingerprint: str | None = None,
    rescore: Callable[[str], float] | None = None,
) -> Promotion:
    """Log the weights file to the run, register it as a new version, apply the champion rule.

    Parameters
    ----------
    uri : tracking (and registry) URI.
    run_id : the training run the weights come from.
    weights_path : file written by ``cdiflow.models.save_weights``.
    metrics : at least ``val_chi2`` (lower is better, finite); all are stored as version
        tags.
    fingerprint : identifies the evaluation set ``val_chi2`` was measured on (stored as
        the version tag ``eval_fingerprint``); see ``apply_champion_rule``.
    rescore : ``champion_version -> score`` on this version's evaluation set; see
        ``apply_champion_rule``.

    Raises
    ------
    NonFiniteScore
        ``val_chi2`` is not a number, NaN or inf; raised before anything is logged or
        registered.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if SCORE_METRIC not in metrics:
        raise ValueError(f"metrics must include {SCORE_METRIC!r}, got {sorted(metrics)}")
    score = _finite_score(metrics[SCORE_METRIC])
    client = MlflowClient(uri, registry_uri=uri)
    with tempfile.TemporaryDirectory() as tmp:
        # fixed file name inside the artifact folder, whatever the caller named it
        staged = Path(tmp) / WEIGHTS_FILE
        staged.write_bytes(Path(weights_path).read_bytes())
        client.log_artifact(run_id, str(staged), WEIGHTS_ARTIFACT_DIR)
    try:
        client.create_registered_model(name, description="cdiflow CNN: weights + typed config")
    except MlflowException as exc:
        if "already exists" not in str(exc).lower() and "RESOURCE_ALREADY_EXISTS" not in str(exc):
            raise
    source = f"{client.get_run(run_id).info.artifact_uri}/{WEIGHTS_ARTIFACT_DIR}"
    tags = {k: repr(float(v)) for k, v in metrics.items()}
    if fingerprint is not None:
        tags[FINGERPRINT_TAG] = fingerprint
    version = client.create_model_version(name, source=source, run_id=run_id, tags=tags)
    return apply_champion_rule(
        client, name, version.version, score, fingerprint=fingerprint, rescore=rescore
    )


def apply_champion_rule(
    client,
    name: str,
    version: str,
    score: float,
    fingerprint: str | None = None,
    rescore: Callable[[str], float] | None = None,
) -> Promotion:
    """Move ``champion`` to ``version`` only if its score beats the champion's; record why.

    A champion whose recorded score is missing, NaN or inf counts as infinitely bad, so
    any finite score replaces it. A non-finite ``score`` raises ``NonFiniteScore``
    before the alias is touched.

    Scores are only compared on the same evaluation set. When ``fingerprint`` (the
    candidate's set) differs from the champion's ``eval_fingerprint`` tag (or the
    champion has none), the champion is scored on the candidate's set with
    ``rescore(champion_version)`` first; without ``rescore`` the alias stays where it
    is (the scores are not comparable). With ``fingerprint`` None the recorded scores
    are compared as they are (callers that cannot name their set). The decision,
    including whether and on which set the champion was rescored, is stored as the
    version tag ``champion_decision`` (JSON).
    """
    score = _finite_score(score)
    aliases = client.get_registered_model(name).aliases
    current = aliases.get(CHAMPION)
    current = None if current is None else str(current)
    fields: dict[str, Any] = {}
    if current is None:
        promoted, reason = True, "no champion yet"
    elif current == str(version):
        promoted, reason = True, "already champion"
    else:
        tags = client.get_model_version(name, current).tags
        recorded = _tag_score(tags.get(SCORE_METRIC))
        theirs = tags.get(FINGERPRINT_TAG)
        fields = {"champion_fingerprint": theirs, "champion_recorded_score": recorded}
        compared, how = recorded, f"recorded {SCORE_METRIC}"
        comparable = fingerprint is None or theirs == fingerprint
        if not comparable and rescore is not None:
            rescored = _tag_score(rescore(current))
            fields |= {"champion_rescored": True, "rescored_fingerprint": fingerprint}
            compared, how = rescored, f"{SCORE_METRIC} rescored on {fingerprint}"
            comparable = True
        if not comparable:
            promoted = False
            reason = (
                f"champion v{current} was scored on evaluation set {theirs} and this version "
                f"on {fingerprint}, and no rescore was given: not comparable, alias kept"
            )
        elif compared is None:
            promoted = True
            reason = f"champion v{current} has no finite {how}: counts as infinitely bad"
        else:
            promoted = score < compared
            verb = "beats" if promoted else "does not beat"
            reason = f"{score:.6g} {verb} champion v{current}'s {how} {compared:.6g}"
        fields["champion_score"] = compared
    if promoted:
        client.set_registered_model_alias(name, CHAMPION, str(version))
    decision = Promotion(
        name=name,
        version=str(version),
        score=score,
        champion_version=current,
        champion_score=fields.pop("champion_score", None),
        promoted=promoted,
        eval_fingerprint=fingerprint,
        reason=reason,
        **fields,
    )
    client.set_model_version_tag(
        name, str(version), "champion_decision", json.dumps(decision.to_dict())
    )
    return decision


def parse_model_ref(ref: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME@ALIAS`` -> (NAME, ALIAS, None); ``models:/NAME/3`` -> (NAME, None, "3")."""
    body = ref[len("models:/") :].strip("/")
    if "@" in body:
        name, alias = body.split("@", 1)
        if name and alias and "/" not in alias:
            return name, alias, None
    elif "/" in body:
        name, version = body.rsplit("/", 1)
        if name and version.isdigit():
            return name, None, version
    raise ModelNotFound(
        f"cannot parse model reference {ref!r}; use models:/NAME@ALIAS, models:/NAME/VERSION "
        "or a weights file path"
    )


def model_reference(ref: str | Path | None) -> str:
    """What a user typed for a model, as the reference ``load_model`` takes.

    ======================================  =========================================
    given                                   returned
    ======================================  =========================================
    ``None`` or ``""``                      ``models:/cdiflow-cnn@champion``
    ``3`` (a version number)                ``models:/cdiflow-cnn/3``
    ``champion`` (an alias name)            ``models:/cdiflow-cnn@champion``
    ``models:/NAME@ALIAS``, ``.../NAME/3``  unchanged (checked by ``parse_model_ref``)
    ``pretrained``                          the shipped weights file (``cdiflow.pretrained``)
    a weights file path (or a ``Path``)     the absolute path, ``~`` expanded
    ======================================  =========================================

    A bare word (no ``/``, no ``.``) is an alias name unless a file of that name exists.
    Nothing is looked up here: ``load_model`` resolves the result. Every ``--model`` flag
    of the CLI goes through this function, so every verb accepts the same forms.

    Raises
    ------
    ModelNotFound
        A ``models:/`` reference that does not parse.
    """
    if ref is None or str(ref) == "":
        return DEFAULT_MODEL
    if isinstance(ref, Path):
        return str(ref.expanduser().resolve())
    text = str(ref)
    if text == pretrained.NAME:
        return str(pretrained.WEIGHTS)
    if text.startswith("models:/"):
        parse_model_ref(text)
        return text
    if text.isdigit():
        return f"models:/{MODEL_NAME}/{text}"
    if "/" not in text and "." not in text and not Path(text).exists():
        return f"models:/{MODEL_NAME}@{text}"
    return str(Path(text).expanduser().resolve())


def _available(client, name: str) -> str:
    from mlflow.exceptions import MlflowException

    try:
        model = client.get_registered_model(name)
    except MlflowException:
        names = sorted(m.name for m in client.search_registered_models())
        return f"no registered model {name!r}; registered models: {names or 'none'}"
    versions = sorted(
        (int(v.version) for v in client.search_model_versions(f"name='{name}'")),
    )
    aliases = {k: str(v) for k, v in sorted(model.aliases.items())}
    return f"{name} has versions {versions or 'none'} and aliases {aliases or 'none'}"


def ensure_pretrained(uri: str, name: str = MODEL_NAME) -> str | None:
    """Register the shipped model as the first version of ``name`` in a new registry.

    Does nothing (returns None) when the package carries no weights, when ``name`` is not
    cdiflow's model, or when the registry already has ``name``. Otherwise the weights go
    in as version 1 with alias ``champion``, tagged ``cdiflow.pretrained``, with the
    validation score and evaluation-set fingerprint the weights file records, so a model
    trained later takes the alias only by beating it on the same data (the champion rule
    rescores it on the candidate's set). Returns the new version.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    if name != MODEL_NAME or not pretrained.available():
        return None
    client = MlflowClient(uri, registry_uri=uri)
    try:
        client.get_registered_model(name)
        return None
    except MlflowException:
        pass
    from cdiflow.models.weights import read_weights

    metadata = read_weights(pretrained.WEIGHTS)["metadata"]
    workspace = Path(uri[len("sqlite:///") :]).parent if is_embedded(uri) else None
    experiment = experiment_id(uri, EXPERIMENT, workspace=workspace)
    run = client.create_run(experiment, run_name="pretrained", tags={PRETRAINED_TAG: "true"})
    decision = register_weights(
        uri,
        run.info.run_id,
        pretrained.WEIGHTS,
        {SCORE_METRIC: float(metadata[SCORE_METRIC])},
        name=name,
        fingerprint=metadata.get(FINGERPRINT_TAG),
    )
    client.set_model_version_tag(name, decision.version, PRETRAINED_TAG, "true")
    client.set_terminated(run.info.run_id)
    return decision.version


def resolve_version(uri: str, ref: str):
    """The ``ModelVersion`` that a ``models:/`` reference names, or ``ModelNotFound``.

    A registry that has never held cdiflow's model gets the shipped one first
    (``ensure_pretrained``), so ``champion`` names a model in every new workspace.
    """
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    name, alias, number = parse_model_ref(ref)
    ensure_pretrained(uri, name)
    client = MlflowClient(uri, registry_uri=uri)
    try:
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        return client.get_model_version(name, number)
    except MlflowException:
        raise ModelNotFound(f"{ref} not found: {_available(client, name)}") from None


def load_model(ref: str | Path, uri: str | None = None):
    """Load a model from the registry or a file, without unpickling code.

    Parameters
    ----------
    ref : ``models:/cdiflow-cnn@champion``, ``models:/cdiflow-cnn/3`` or a weights file path.
    uri : tracking URI for registry references (default: mlflow's current one).

    Returns
    -------
    (model, config, provenance) : the module in eval mode, its ``ModelConfig``, and a dict
    saying where it came from (ref, path, and for registry versions name, version, run id,
    aliases and the version's tags).
    """
    text = str(ref)
    if not text.startswith("models:/"):
        path = Path(text).expanduser()
        if not path.is_file():
            raise ModelNotFound(
                f"{text}: no such weights file (or use models:/NAME@ALIAS, models:/NAME/VERSION)"
            )
        from cdiflow.models import load_weights

        model, config, *_ = load_weights(path)
        model.eval()
        return model, config, {"ref": text, "path": str(path.resolve())}

    import mlflow
    from mlflow import MlflowClient

    from cdiflow.models import load_weights

    uri = uri or mlflow.get_tracking_uri()
    version = resolve_version(uri, text)
    client = MlflowClient(uri, registry_uri=uri)
    with tempfile.TemporaryDirectory() as tmp:
        folder = mlflow.artifacts.download_artifacts(
            artifact_uri=version.source, dst_path=tmp, tracking_uri=uri
        )
        path = Path(folder) / WEIGHTS_FILE
        if not path.is_file():
            raise ModelNotFound(f"{text}: version {version.version} has no {WEIGHTS_FILE}")
        model, config, *_ = load_weights(path)
    model.eval()
    aliases = client.get_registered_model(version.name).aliases
    provenance = {
        "ref": text,
        "name": version.name,
        "version": str(version.version),
        "run_id": version.run_id,
        "source": version.source,
        "aliases": sorted(a for a, v in aliases.items() if str(v) == str(version.version)),
        "tags": dict(version.tags),
        "tracking_uri": uri,
    }
    return model, config, provenance
