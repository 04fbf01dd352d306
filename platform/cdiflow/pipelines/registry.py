"""The model registry: register weights, name a model, load it without unpickling code.

The registered model is ``cdiflow-cnn``. A version's artifact is the weights file written
by ``cdiflow.models.save_weights`` (tensors plus the typed architecture config), never a
pickled module, so loading a version never runs code from the store. Its metrics are
kept as version tags; ``cdiflow.pipelines.champion`` decides where the alias
``champion`` points. A registry that has never held cdiflow's model gets the shipped one
first (``ensure_pretrained``). mlflow is imported inside the functions.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from cdiflow import pretrained
from cdiflow.errors import ModelNotFound
from cdiflow.pipelines.champion import Promotion, apply_champion_rule, finite_score
from cdiflow.pipelines.tracking_store import (
    DEFAULT_MODEL,
    FINGERPRINT_TAG,
    MODEL_NAME,
    SCORE_METRIC,
    WEIGHTS_FILE,
    experiment_id,
    is_embedded,
)

WEIGHTS_ARTIFACT_DIR = "weights"  # run artifact folder that holds the weights file
PRETRAINED_TAG = "cdiflow.pretrained"  # version tag "true": the model shipped in the package


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
    score = finite_score(metrics[SCORE_METRIC])
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
    ``pretrained-realistic``                the shipped realistic-preset model
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
    if text in pretrained.SHIPPED:
        return str(pretrained.SHIPPED[text])
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
    from cdiflow.models.weights import read_weights  # lazy: torch, like mlflow here

    metadata = read_weights(pretrained.WEIGHTS)["metadata"]
    workspace = Path(uri[len("sqlite:///") :]).parent if is_embedded(uri) else None
    experiment = experiment_id(uri, workspace=workspace)  # the cdiflow experiment
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
        from cdiflow.models import load_weights  # lazy: torch, like mlflow here

        model, config, *_ = load_weights(path)
        model.eval()
        return model, config, {"ref": text, "path": str(path.resolve())}

    import mlflow
    from mlflow import MlflowClient

    from cdiflow.models import load_weights  # lazy: torch, like mlflow here

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
