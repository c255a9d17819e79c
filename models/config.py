"""Typed, validated configuration dataclasses shared by every network.

Each network has one frozen dataclass subclassing :class:`ConfigBase`. It validates itself in
``__post_init__`` and round-trips through plain JSON (tuples become lists and back), so the exact
config travels beside the weights in ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T", bound="ConfigBase")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the fix."""


def require(condition: bool, field: str, message: str) -> None:
    """Raise :class:`ConfigError` naming ``field`` unless ``condition`` holds."""
    if not condition:
        raise ConfigError(f"{field}: {message}")


@dataclasses.dataclass(frozen=True)
class ConfigBase:
    """Base class: validation hook plus JSON round trip with field-level errors."""

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:  # pragma: no cover - overridden
        """Check every field; raise :class:`ConfigError` naming the first bad one."""

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, ConfigBase):
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_dict(cls: type[T], data: dict[str, Any], where: str = "") -> T:
        prefix = f"{where or cls.__name__}."
        if not isinstance(data, dict):
            raise ConfigError(f"{where or cls.__name__}: expected a JSON object, got {type(data).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ConfigError(
                f"{prefix}{unknown[0]}: unknown field for {cls.__name__} (known: {', '.join(sorted(names))})"
            )
        hints = typing.get_type_hints(cls)
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ConfigError(f"{prefix}{f.name}: missing required field")
                continue
            kwargs[f.name] = _coerce(data[f.name], hints[f.name], prefix + f.name)
        return cls(**kwargs)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @classmethod
    def load(cls: type[T], path: str | Path) -> T:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path}: not valid JSON ({exc}); re-export or restore the file") from exc
        return cls.from_dict(data, where=str(path))

    def replace(self: T, **changes: Any) -> T:
        return dataclasses.replace(self, **changes)


def _coerce(value: Any, hint: Any, field: str) -> Any:
    origin = typing.get_origin(hint)
    if isinstance(hint, type) and issubclass(hint, ConfigBase):
        return hint.from_dict(value, where=field)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None:
            return None
        configs = [a for a in args if isinstance(a, type) and issubclass(a, ConfigBase)]
        if len(configs) > 1:
            return _by_kind(value, configs, field)
        return _coerce(value, args[0], field)
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{field}: expected a list, got {type(value).__name__}")
        args = typing.get_args(hint)
        item = args[0] if args else Any
        return tuple(_coerce(v, item, f"{field}[{i}]") for i, v in enumerate(value))
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{field}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{field}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{field}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{field}: expected a string, got {value!r}")
        return value
    return value


def config_kind(cls: type[ConfigBase]) -> str:
    """The default of a config class's ``kind`` field: what tells its JSON apart in a union."""
    for f in dataclasses.fields(cls):
        if f.name == "kind" and isinstance(f.default, str):
            return f.default
    raise TypeError(f"{cls.__name__} has no `kind: str` field with a default; a config union needs one")


def config_class_by_kind(value: Any, configs: list[type[ConfigBase]], field: str) -> type[ConfigBase]:
    """Which of ``configs`` the JSON object ``value`` was written from, by its ``kind`` field; an object
    without one is the first class (files written before the union existed)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{field}: expected a JSON object, got {type(value).__name__}")
    kinds = {config_kind(c): c for c in configs}
    kind = value.get("kind", config_kind(configs[0]))
    if kind not in kinds:
        raise ConfigError(f"{field}.kind: unknown kind {kind!r}; choose one of {', '.join(sorted(kinds))}")
    return kinds[kind]


def _by_kind(value: Any, configs: list[type[ConfigBase]], field: str) -> ConfigBase:
    return config_class_by_kind(value, configs, field).from_dict(value, where=field)
