"""Dataclass configs <-> YAML, with dotted overrides and strict key checking.

A config is a (possibly nested) ``@dataclass``. ``load_config(Cls, path, overrides)`` reads a
YAML file, applies overrides such as ``["train.steps=200", "field.kind=mlp"]`` and returns a
validated instance. Unknown keys are errors that name the nearest valid key, so a typo in a YAML
file or on the command line never passes silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit its dataclass."""


def _suggest(key: str, valid: list[str]) -> str:
    close = difflib.get_close_matches(key, valid, n=1)
    return f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(valid)})"


def _strip_optional(tp: Any) -> Any:
    """``Optional[X]`` / ``X | None`` -> ``X``; anything else unchanged."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return tp


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """Convert a YAML/override value to the annotated field type ``tp``."""
    if value is None:
        return None
    tp = _strip_optional(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=where)
    origin = typing.get_origin(tp)
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
        raise ConfigError(f"{where}: expected true/false, got {value!r}")
    if tp in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}")
        try:
            converted = tp(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: expected {tp.__name__}, got {value!r}") from exc
        if tp is int and isinstance(value, float) and converted != value:
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return converted
    if tp is str:
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        if key not in fields:
            raise ConfigError(f"unknown config key '{where}'" + _suggest(key, list(fields)))
        kwargs[key] = _coerce(value, hints[key], where)
    return cls(**kwargs)


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> plain nested dict (tuples become lists), ready for YAML."""
    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            return {f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return convert(cfg)


def apply_overrides(data: dict[str, Any], overrides: list[str], cls: type) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML) to a nested dict, checking keys
    against dataclass ``cls`` so that typos are reported with a suggestion."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        dotted, raw = item.split("=", 1)
        value = yaml.safe_load(raw) if raw != "" else ""
        keys = dotted.split(".")
        node, node_cls = data, cls
        for depth, key in enumerate(keys):
            valid = [f.name for f in dataclasses.fields(node_cls)]
            if key not in valid:
                where = ".".join(keys[: depth + 1])
                raise ConfigError(f"unknown config key '{where}'" + _suggest(key, valid))
            if depth == len(keys) - 1:
                node[key] = value
                break
            sub_cls = _strip_optional(typing.get_type_hints(node_cls)[key])
            if not dataclasses.is_dataclass(sub_cls):
                raise ConfigError(f"'{'.'.join(keys[: depth + 1])}' is not a section")
            node = node.setdefault(key, {})
            node_cls = sub_cls
    return data


def load_config(cls: type[T], path: str | Path | None = None,
                overrides: list[str] | None = None) -> T:
    """Defaults of ``cls`` <- YAML file at ``path`` <- dotted ``overrides``."""
    data: dict[str, Any] = to_dict(cls())
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        from_dict(cls, loaded)  # validate keys of the file itself, with its own messages
        _deep_update(data, loaded)
    apply_overrides(data, overrides or [], cls)
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))


def _deep_update(base: dict[str, Any], new: dict[str, Any]) -> None:
    for key, value in new.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value
