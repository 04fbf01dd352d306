"""Typed, frozen configs: loaded from YAML or dicts once, validated at the entry point.

Every config in cdiflow is a frozen dataclass that subclasses ``Config``. ``from_dict``
refuses unknown keys (with the list of known ones), converts lists to tuples and builds
nested configs; ``validate`` is called by ``__post_init__`` so an invalid config can
never exist. ``to_dict`` gives a plain dict that logs whole to MLflow and JSON.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

from cdiflow.errors import ConfigError

C = TypeVar("C", bound="Config")


@dataclasses.dataclass(frozen=True)
class Config:
    """Base of every typed config."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # pragma: no cover - overridden where needed
        """Raise ``ConfigError`` on impossible values."""

    # --- construction -------------------------------------------------------------
    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any] | None, where: str = "") -> C:
        data = dict(data or {})
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
        unknown = sorted(set(data) - set(fields))
        if unknown:
            prefix = f"{where}: " if where else ""
            raise ConfigError(
                f"{prefix}unknown key(s) {unknown} in {cls.__name__}; known keys: {sorted(fields)}"
            )
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for name, value in data.items():
            kwargs[name] = _coerce(hints[name], value, f"{where}.{name}" if where else name)
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise ConfigError(f"{cls.__name__}: {exc}") from None

    @classmethod
    def from_yaml(cls: type[C], path: str | Path | None, overrides: dict | None = None) -> C:
        """Load from a YAML file (or defaults when ``path`` is None), then apply overrides.

        ``overrides`` holds dotted keys (``{"optimizer.lr": 0.1}``) from CLI flags; None
        values are ignored so unset flags keep the file's value.
        """
        data: dict[str, Any] = {}
        if path is not None:
            p = Path(path)
            if not p.is_file():
                raise ConfigError(f"config file not found: {p}")
            try:
                loaded = yaml.safe_load(p.read_text())
            except yaml.YAMLError as exc:
                raise ConfigError(f"{p}: not valid YAML ({exc})") from None
            if loaded is None:
                loaded = {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"{p}: the top level must be a mapping")
            data = loaded
        for dotted, value in (overrides or {}).items():
            if value is None:
                continue
            node = data
            *parents, leaf = dotted.split(".")
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return cls.from_dict(data, where=str(path) if path else "")

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        # Nested configs give their own ``to_dict``, so a subclass that shapes its dict
        # (``GeneratorConfig`` leaves out an unset ``variation``) is shaped inside others.
        return {f.name: _field_value(getattr(self, f.name)) for f in dataclasses.fields(self)}


def _field_value(value: Any) -> Any:
    if isinstance(value, Config):
        return value.to_dict()
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _plain(dataclasses.asdict(value))
    return _plain(value)


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _coerce(hint: Any, value: Any, where: str) -> Any:
    """Turn YAML values into the annotated type (nested configs, tuples, floats)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        if len(args) == 1:
            return _coerce(args[0], value, where)
        return value
    if isinstance(hint, type) and issubclass(hint, Config):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {hint.__name__}")
        return hint.from_dict(value, where=where)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, where) for v in value)
        if len(args) != len(value):
            raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
        return tuple(_coerce(a, v, where) for a, v in zip(args, value, strict=True))
    if hint is float:
        if isinstance(value, str):
            value = _yaml_number(value, where)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def _yaml_number(text: str, where: str) -> float:
    """A float written the way YAML 1.1 does not read it (``1.0e5``, ``1e9``) is a number.

    PyYAML reads exponents only with a sign (``1.0e+5``) and leaves ``1e5`` a string; a
    user writing a photon count means the number.
    """
    try:
        return float(text)
    except ValueError:
        raise ConfigError(f"{where}: expected a number, got {text!r}") from None


def require(condition: bool, message: str) -> None:
    """Raise ``ConfigError(message)`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(message)
