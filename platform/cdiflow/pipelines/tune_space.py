"""The typed search space of a sweep, and the sweep's own settings (no Ray imported here).

A sweep file (``configs/tune.yaml``) holds the sweep settings and a ``space`` mapping
from dotted keys of the training config (``train.lr``, ``train.loss.physics``,
``model.base_width``) to distributions::

    space:
      train.lr: {type: loguniform, low: 0.001, high: 0.03}
      train.schedule: {type: choice, values: [step, cosine, onecycle]}

Everything is validated before Ray starts: an unknown distribution type, a missing or
impossible bound, a key that is not a training-config field, or a value that the
training config itself refuses (e.g. ``schedule: linear``) is a one-line ``ConfigError``.
Only then does ``to_tune`` turn the space into Ray Tune domains.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from typing import Any

from cdiflow.config import Config, require
from cdiflow.errors import ConfigError

#: Distribution types a space may use; see ``Distribution``.
KINDS = ("uniform", "loguniform", "int", "choice", "fixed")
#: Top-level sections of the training config that a sweep may vary.
TUNABLE_SECTIONS = ("model", "train")
#: The metric every sweep minimises: validation modulus chi^2 (eq. 5), as in the champion rule.
METRIC = "val_chi2"


@dataclasses.dataclass(frozen=True)
class Distribution(Config):
    """One dimension of the search space.

    type : ``uniform`` (low, high), ``loguniform`` (0 < low < high), ``int`` (integers
        low..high, both included), ``choice`` (values: a non-empty list) or ``fixed``
        (value: the same for every trial).
    """

    type: str = ""
    low: float | None = None
    high: float | None = None
    values: tuple[Any, ...] | None = None
    value: Any = None

    def validate(self) -> None:
        require(self.type in KINDS, f"distribution type {self.type!r} is not one of {KINDS}")
        given = {k for k in ("low", "high", "values", "value") if getattr(self, k) is not None}
        needed = {
            "uniform": {"low", "high"},
            "loguniform": {"low", "high"},
            "int": {"low", "high"},
            "choice": {"values"},
            "fixed": {"value"},
        }[self.type]
        require(
            given == needed,
            f"a {self.type} distribution takes {sorted(needed)}, got {sorted(given) or 'none'}",
        )
        if self.type in ("uniform", "loguniform", "int"):
            low, high = self.low, self.high
            require(
                math.isfinite(low) and math.isfinite(high),
                f"{self.type} bounds must be finite, got [{low}, {high}]",
            )
            require(low < high, f"{self.type} needs low < high, got [{low:g}, {high:g}]")
        if self.type == "loguniform":
            require(self.low > 0, f"loguniform needs low > 0, got {self.low:g}")
        if self.type == "int":
            require(
                float(self.low).is_integer() and float(self.high).is_integer(),
                f"int bounds must be integers, got [{self.low:g}, {self.high:g}]",
            )
        if self.type == "choice":
            require(len(self.values) > 0, "choice needs at least one value")
            require(
                len(set(map(repr, self.values))) == len(self.values),
                f"choice values repeat: {list(self.values)}",
            )

    def corners(self) -> list[Any]:
        """The extreme values a trial can get (checked against the training config)."""
        if self.type in ("uniform", "loguniform"):
            return [self.low, self.high]
        if self.type == "int":
            return [int(self.low), int(self.high)]
        if self.type == "choice":
            return list(self.values)
        return [self.value]

    def to_tune(self):
        """The Ray Tune domain (``fixed`` has none: it goes into the base config)."""
        from ray import tune

        if self.type == "uniform":
            return tune.uniform(self.low, self.high)
        if self.type == "loguniform":
            return tune.loguniform(self.low, self.high)
        if self.type == "int":
            return tune.randint(int(self.low), int(self.high) + 1)  # Tune's high is exclusive
        if self.type == "choice":
            return tune.choice(list(self.values))
        raise ValueError("a fixed value has no Tune domain")


@dataclasses.dataclass(frozen=True)
class SweepConfig(Config):
    """A sweep: how many trials, how long each, how to search, and the space.

    trials : number of trials (Optuna suggestions).
    epochs : epochs of every trial (ASHA's ``max_t``; overrides ``train.epochs``).
    seed : seed of the Optuna sampler (the trials' own seed is ``train.seed``).
    grace_period : ASHA: epochs a trial runs before it may be stopped; 0 (default) follows
        ``epochs``: ``min(2, epochs)`` (``asha_grace_period``), so a short sweep never
        refuses a default the user did not set.
    reduction_factor : ASHA: keep the best 1/reduction_factor at each rung.
    max_concurrent_trials : trials at once; 0 sizes it from the cluster so that trials
        never wait on each other's CPUs (see ``cdiflow.pipelines.tune.concurrency``).
    trial_cpus : CPU reserved for each trial's own process, which only builds the
        ``TorchTrainer`` and waits on it (the Train controller takes no CPU).
    data_cpus : CPU left free per trial for Ray Data's tasks. A read task asks for a whole
        CPU, so less than 1 can leave the reads unscheduled while the trial waits on them.
    experiment : MLflow experiment of the sweep's parent run and the trials' child runs.
    register : register the best trial as a new version of ``cdiflow-cnn`` with alias
        ``candidate`` (and apply the champion rule).
    space : dotted training-config key -> ``Distribution``.
    """

    trials: int = 8
    epochs: int = 10
    seed: int = 0
    grace_period: int = 0
    reduction_factor: float = 3.0
    max_concurrent_trials: int = 0
    trial_cpus: float = 0.25
    data_cpus: float = 1.0
    experiment: str = "cdiflow-tune"
    register: bool = True
    space: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        space = {}
        for key, value in dict(self.space or {}).items():
            where = f"space.{key}"
            if isinstance(value, Distribution):
                space[key] = value
            elif isinstance(value, dict):
                try:
                    space[key] = Distribution.from_dict(value, where=where)
                except ConfigError as exc:
                    text = str(exc)
                    raise ConfigError(
                        text if text.startswith(where) else f"{where}: {text}"
                    ) from None
            else:
                raise ConfigError(f"{where}: expected a mapping such as {{type: uniform, ...}}")
        object.__setattr__(self, "space", space)
        super().__post_init__()

    @property
    def asha_grace_period(self) -> int:
        """The grace period ASHA gets: as set, or ``min(2, epochs)`` for 0 (auto)."""
        return self.grace_period or min(2, self.epochs)

    def validate(self) -> None:
        require(self.trials >= 1, f"trials must be >= 1, got {self.trials}")
        require(self.epochs >= 1, f"epochs must be >= 1, got {self.epochs}")
        require(
            0 <= self.grace_period <= self.epochs,
            f"grace_period must be 0 (auto) or in [1, epochs={self.epochs}], "
            f"got {self.grace_period}",
        )
        require(self.reduction_factor > 1, "reduction_factor must be > 1")
        require(self.max_concurrent_trials >= 0, "max_concurrent_trials must be >= 0")
        require(self.trial_cpus > 0, f"trial_cpus must be > 0, got {self.trial_cpus}")
        require(self.data_cpus >= 0, f"data_cpus must be >= 0, got {self.data_cpus}")
        require(bool(self.experiment), "experiment must not be empty")
        require(bool(self.space), "space is empty: give at least one key to tune")
        for key in self.space:
            section = key.split(".", 1)[0]
            require(
                section in TUNABLE_SECTIONS and "." in key,
                f"space.{key}: keys are dotted paths under {TUNABLE_SECTIONS}, "
                "e.g. train.lr or model.base_width",
            )
        require(
            "train.epochs" not in self.space,
            "space.train.epochs: set the sweep's `epochs` instead (it is ASHA's max_t)",
        )

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        data["space"] = {k: _drop_none(v.to_dict()) for k, v in self.space.items()}
        return data

    def tuned(self) -> dict[str, Distribution]:
        """The dimensions Optuna searches (``fixed`` ones excluded)."""
        return {k: d for k, d in self.space.items() if d.type != "fixed"}

    def fixed(self) -> dict[str, Any]:
        return {k: d.value for k, d in self.space.items() if d.type == "fixed"}


def _drop_none(data: dict) -> dict:
    return {k: v for k, v in data.items() if v is not None}


def set_dotted(data: dict, dotted: str, value: Any) -> None:
    """``data["a"]["b"] = value`` for ``dotted="a.b"`` (an existing leaf only)."""
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.get(part) if isinstance(node, dict) else None
        if not isinstance(child, dict):
            raise ConfigError(f"space.{dotted}: {part!r} is not a section of the training config")
        node = child
    if leaf not in node or isinstance(node[leaf], dict):
        known = sorted(k for k, v in node.items() if not isinstance(v, dict))
        raise ConfigError(f"space.{dotted}: not a training-config field; fields here: {known}")
    node[leaf] = value


def trial_config(base: dict, epochs: int, params: dict[str, Any]) -> dict:
    """The training config of one trial: ``base`` with the epochs and ``params`` applied."""
    data = copy.deepcopy(base)
    data.setdefault("train", {})["epochs"] = epochs
    for key, value in params.items():
        set_dotted(data, key, value)
    return data


def check_space(sweep: SweepConfig, base: dict, build) -> None:
    """Build the training config at every corner of the space; raise ``ConfigError`` early.

    Parameters
    ----------
    sweep : the sweep.
    base : the training config as a plain dict (``TrainJobConfig.to_dict()``).
    build : ``dict -> config``; ``TrainJobConfig.from_dict``, which validates.
    """
    fixed = sweep.fixed()
    build(trial_config(base, sweep.epochs, fixed))
    for key, dist in sweep.tuned().items():
        for value in dist.corners():
            try:
                build(trial_config(base, sweep.epochs, {**fixed, key: value}))
            except ConfigError as exc:
                text = str(exc)
                prefix = f"space.{key}"
                raise ConfigError(
                    text if text.startswith(prefix) else f"{prefix} = {value!r}: {text}"
                ) from None
