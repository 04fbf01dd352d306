"""Tracking and registry against a local SQLite store (no server, no Ray)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from cdiflow.errors import ModelNotFound

mlflow = pytest.importorskip("mlflow")

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def store(tmp_path_factory, monkeypatch_module):
    from cdiflow.pipelines import tracking

    monkeypatch_module.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = tmp_path_factory.mktemp("ws")
    uri = tracking.tracking_uri(workspace)
    return uri, workspace, tracking.experiment_id(uri, workspace=workspace)


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_import_does_no_work():
    code = (
        "import sys; import cdiflow.pipelines.tracking, cdiflow.pipelines.train; "
        "assert 'mlflow' not in sys.modules and 'ray' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ})


def test_embedded_store_lives_in_workspace_and_env_overrides(tmp_path, monkeypatch):
    from cdiflow.pipelines.tracking import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking_uri(tmp_path / "ws")
    assert uri == f"sqlite:///{(tmp_path / 'ws').resolve() / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri(tmp_path / "other") == "http://127.0.0.1:5999"
    assert not (tmp_path / "other").exists()


def test_run_logger_logs_config_seeds_sha_and_epochs(store):
    from mlflow import MlflowClient

    from cdiflow.pipelines.tracking import RunLogger

    uri, workspace, exp = store
    config = {"model": {"base_width": 8, "depth": 3}, "train": {"lr": 0.01, "epochs": 2}}
    logger = RunLogger.start(uri, exp, "unit-run", config, {"data": 7, "train": 3})
    for epoch in range(2):
        logger.log_epoch(epoch, {"loss": 1.0 / (epoch + 1), "val_chi2": 0.5, "bad": float("nan")})
    logger.finish()
    client = MlflowClient(uri, registry_uri=uri)
    run = client.get_run(logger.run_id)
    assert run.data.params["model.base_width"] == "8"
    assert run.data.params["train.lr"] == "0.01"
    assert run.data.params["seed.data"] == "7"
    assert "bad" not in run.data.metrics
    history = client.get_metric_history(logger.run_id, "loss")
    assert [m.step for m in history] == [0, 1]
    assert run.info.artifact_uri.startswith((workspace.resolve() / "mlartifacts").as_uri())
    assert run.data.tags.get("git_sha") == _checkout_sha()
    assert run.info.status == "FINISHED"


def _checkout_sha():
    """HEAD of the git checkout holding cdiflow, or None outside git (what should be logged)."""
    from pathlib import Path

    import cdiflow

    reply = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=Path(cdiflow.__file__).parent, capture_output=True
    )
    return reply.stdout.decode().strip() if reply.returncode == 0 else None


def _run_with_weights(uri, exp, tmp_path, payload: bytes, score: float):
    from cdiflow.pipelines.tracking import RunLogger, register_weights

    logger = RunLogger.start(uri, exp, "reg", {"x": 1}, {"train": 0})
    weights = tmp_path / f"w{score}.bin"
    weights.write_bytes(payload)
    decision = register_weights(uri, logger.run_id, weights, {"val_chi2": score, "loss": 0.3})
    logger.finish()
    return decision


def test_champion_moves_only_on_better_val_chi2(store, tmp_path):
    from mlflow import MlflowClient

    from cdiflow.pipelines.tracking import CHAMPION, MODEL_NAME

    uri, _, exp = store
    first = _run_with_weights(uri, exp, tmp_path, b"first", 0.20)
    assert first.promoted and first.champion_version is None
    worse = _run_with_weights(uri, exp, tmp_path, b"worse", 0.30)
    assert not worse.promoted
    assert worse.champion_version == first.version and worse.champion_score == 0.20
    better = _run_with_weights(uri, exp, tmp_path, b"better", 0.10)
    assert better.promoted and better.champion_version == first.version
    client = MlflowClient(uri, registry_uri=uri)
    assert str(client.get_registered_model(MODEL_NAME).aliases[CHAMPION]) == better.version
    version = client.get_model_version(MODEL_NAME, worse.version)
    assert float(version.tags["val_chi2"]) == 0.30
    recorded = json.loads(version.tags["champion_decision"])
    assert recorded["promoted"] is False and recorded["champion_score"] == 0.20


def test_missing_alias_or_version_lists_what_exists(store, tmp_path):
    from cdiflow.pipelines.tracking import resolve_version

    uri, _, exp = store
    _run_with_weights(uri, exp, tmp_path, b"any", 0.5)
    with pytest.raises(ModelNotFound, match=r"versions \[1, .*aliases .*champion"):
        resolve_version(uri, "models:/cdiflow-cnn@staging")
    with pytest.raises(ModelNotFound, match=r"cdiflow-cnn/999 not found: .*versions"):
        resolve_version(uri, "models:/cdiflow-cnn/999")
    with pytest.raises(ModelNotFound, match="registered models: \\['cdiflow-cnn'\\]"):
        resolve_version(uri, "models:/nonesuch@champion")
    with pytest.raises(ModelNotFound, match="cannot parse"):
        resolve_version(uri, "models:/cdiflow-cnn")


def test_missing_file_is_model_not_found(tmp_path):
    from cdiflow.pipelines.tracking import load_model

    with pytest.raises(ModelNotFound, match="no such weights file"):
        load_model(tmp_path / "nope.pt")


# --- champion rule: non-finite scores, evaluation-set fingerprints -----------------------


@pytest.fixture(scope="module")
def rule_store(tmp_path_factory, monkeypatch_module):
    """A store of its own (each test uses its own model name), so the tests above keep
    seeing ``cdiflow-cnn`` as the only registered model."""
    from cdiflow.pipelines import tracking

    monkeypatch_module.delenv("MLFLOW_TRACKING_URI", raising=False)
    workspace = tmp_path_factory.mktemp("ws-rule")
    uri = tracking.tracking_uri(workspace)
    return uri, tracking.experiment_id(uri, workspace=workspace)


def _register(store, tmp_path, model, score, fingerprint=None, rescore=None):
    from cdiflow.pipelines.tracking import RunLogger, register_weights

    uri, exp = store
    logger = RunLogger.start(uri, exp, "rule", {"x": 1}, {"train": 0})
    weights = tmp_path / "w.bin"
    weights.write_bytes(f"{model} {score} {fingerprint}".encode())
    given = {"fingerprint": fingerprint, "rescore": rescore}
    extra = {k: v for k, v in given.items() if v is not None}
    try:
        return register_weights(
            uri, logger.run_id, weights, {"val_chi2": score}, name=model, **extra
        )
    finally:
        logger.finish()


def _champion(uri, model):
    from mlflow import MlflowClient

    return str(MlflowClient(uri, registry_uri=uri).get_registered_model(model).aliases["champion"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "nan"], ids=["nan", "inf", "str"])
def test_non_finite_score_is_refused_before_anything_is_registered(
    rule_store, tmp_path, bad, request
):
    from mlflow import MlflowClient

    from cdiflow.errors import InputError, NonFiniteScore

    uri, exp = rule_store
    model = f"refuse-{request.node.callspec.id}"
    first = _register(rule_store, tmp_path, model, 0.3)
    client = MlflowClient(uri, registry_uri=uri)
    runs_before = {r.info.run_id for r in client.search_runs([exp], max_results=1000)}
    with pytest.raises(NonFiniteScore, match="val_chi2 is (nan|inf).*nothing was registered"):
        _register(rule_store, tmp_path, model, bad)
    assert issubclass(NonFiniteScore, InputError)  # the CLI reports it as bad input
    versions = client.search_model_versions(f"name='{model}'")
    assert [str(v.version) for v in versions] == [first.version]
    assert _champion(uri, model) == first.version
    # the refused run's artifacts were not logged either
    refused = {r.info.run_id for r in client.search_runs([exp], max_results=1000)} - runs_before
    assert len(refused) == 1 and not client.list_artifacts(refused.pop(), "weights")
    assert client.list_artifacts(client.get_model_version(model, first.version).run_id, "weights")


@pytest.mark.parametrize("tag", ["nan", "inf", None])
def test_finite_score_beats_a_champion_without_a_finite_score(rule_store, tmp_path, tag):
    """A registry written before the fix can hold a NaN champion: it must not stick."""
    from mlflow import MlflowClient

    from cdiflow.pipelines.tracking import RunLogger

    uri, exp = rule_store
    model = f"stuck-{tag}"
    client = MlflowClient(uri, registry_uri=uri)
    client.create_registered_model(model)
    run = RunLogger.start(uri, exp, "old", {"x": 1}, {"train": 0}).run_id
    tags = {} if tag is None else {"val_chi2": tag}
    old = client.create_model_version(model, source="file:///nowhere", run_id=run, tags=tags)
    client.set_registered_model_alias(model, "champion", old.version)

    decision = _register(rule_store, tmp_path, model, 0.9)
    assert decision.promoted and decision.champion_version == str(old.version)
    assert decision.champion_score is None and "infinitely bad" in decision.reason
    assert _champion(uri, model) == decision.version
    later = _register(rule_store, tmp_path, model, 0.5)  # and the rule works on from there
    assert later.promoted and later.champion_score == 0.9
    recorded = client.get_model_version(model, decision.version).tags["champion_decision"]
    assert json.loads(recorded)["promoted"] is True  # strict JSON: no NaN in it


def test_champion_from_another_eval_set_is_rescored_before_comparing(rule_store, tmp_path):
    from mlflow import MlflowClient

    uri, _ = rule_store
    model = "fingerprints"
    client = MlflowClient(uri, registry_uri=uri)
    calls: list[tuple[str, str]] = []

    def rescore_on(fingerprint, scores):
        """The champion's score on ``fingerprint``'s set, from a table per version."""

        def rescore(version: str) -> float:
            calls.append((fingerprint, version))
            return scores[version]

        return rescore

    def refuse(version: str) -> float:
        raise AssertionError(f"same evaluation set: v{version} must not be rescored")

    a = _register(rule_store, tmp_path, model, 0.10, fingerprint="set-A")
    assert a.promoted and not a.champion_rescored
    assert client.get_model_version(model, a.version).tags["eval_fingerprint"] == "set-A"

    # set B is harder: the champion's 0.10 on A says nothing; on B it scores 0.30
    b = _register(
        rule_store, tmp_path, model, 0.20, "set-B", rescore_on("set-B", {a.version: 0.30})
    )
    assert calls == [("set-B", a.version)]
    assert b.promoted and b.champion_rescored and b.rescored_fingerprint == "set-B"
    assert b.champion_score == 0.30 and b.champion_recorded_score == 0.10
    assert b.champion_fingerprint == "set-A" and b.eval_fingerprint == "set-B"
    recorded = json.loads(client.get_model_version(model, b.version).tags["champion_decision"])
    assert recorded["champion_rescored"] is True and recorded["rescored_fingerprint"] == "set-B"
    assert recorded["champion_score"] == 0.30
    assert _champion(uri, model) == b.version

    # same set as the champion: the recorded scores compare directly, no rescore
    c = _register(rule_store, tmp_path, model, 0.25, "set-B", refuse)
    assert not c.promoted and not c.champion_rescored and c.champion_score == 0.20

    # another set where the champion does better than the candidate: it stays
    d = _register(
        rule_store, tmp_path, model, 0.15, "set-C", rescore_on("set-C", {b.version: 0.05})
    )
    assert not d.promoted and d.champion_rescored and d.champion_score == 0.05
    assert _champion(uri, model) == b.version

    # another set and no way to rescore: not comparable, the alias stays
    e = _register(rule_store, tmp_path, model, 0.01, "set-D")
    assert not e.promoted and not e.champion_rescored and "not comparable" in e.reason
    assert _champion(uri, model) == b.version
    assert calls == [("set-B", a.version), ("set-C", b.version)]
