"""Ray Train's worker-group start timeout: one value, set by the package itself.

``cdiflow.pipelines.cluster.train_env_defaults`` sets it (unless the user did) in the
process that calls ``TorchTrainer.fit()``; Ray Train passes it on to its controller and
workers. So no other module, script, recipe or CI step types the value again.
"""

from __future__ import annotations

import os
from pathlib import Path

from cdiflow.pipelines import cluster

REPO = Path(__file__).resolve().parents[2]


def test_default_is_set_and_a_users_value_wins(monkeypatch):
    monkeypatch.delenv(cluster.TRAIN_START_TIMEOUT_ENV, raising=False)
    cluster.train_env_defaults()
    assert os.environ[cluster.TRAIN_START_TIMEOUT_ENV] == str(cluster.TRAIN_START_TIMEOUT_S)
    monkeypatch.setenv(cluster.TRAIN_START_TIMEOUT_ENV, "42")
    cluster.train_env_defaults()
    assert os.environ[cluster.TRAIN_START_TIMEOUT_ENV] == "42"


def test_ray_train_propagates_the_variable_from_the_driver():
    # what makes setting it before fit() enough, on a cluster too
    from ray.train.v2._internal.constants import ENV_VARS_TO_PROPAGATE

    assert cluster.TRAIN_START_TIMEOUT_ENV in ENV_VARS_TO_PROPAGATE


def test_every_trainer_fit_in_the_package_sets_it_first():
    for path in (REPO / "platform" / "cdiflow" / "pipelines").glob("*.py"):
        text = path.read_text()
        fits = text.count("trainer.fit()")
        assert text.count("train_env_defaults()") >= fits, path.name


def test_the_variable_is_named_in_one_module_only():
    roots = ["platform", "jobs", "benchmarks", "cluster", ".ci"]
    files = [p for root in roots for p in (REPO / root).rglob("*") if p.is_file()]
    files += [REPO / "tests" / "conftest.py", REPO / "tests" / "integration" / "conftest.py"]
    where = sorted(
        str(p.relative_to(REPO))
        for p in files
        if p.suffix not in (".pyc", ".db", ".parquet", ".pt")
        and cluster.TRAIN_START_TIMEOUT_ENV in p.read_text(errors="ignore")
    )
    assert where == ["platform/cdiflow/pipelines/cluster.py"]
