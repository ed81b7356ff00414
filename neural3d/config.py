"""Dataclass configs <-> YAML, with dotted overrides and strict key checking.

A config is a (possibly nested) ``@dataclass``. ``load_config(Cls, path, overrides)`` reads a
YAML file, applies overrides such as ``["train.steps=200", "field.kind=mlp"]`` and returns a
validated instance. Unknown keys are errors that name the nearest valid key, so a typo in a YAML
file or on the command line never passes silently.

**Tagged unions.** A section annotated with a :class:`TaggedConfig` family (e.g. the field
configs of :mod:`neural3d.fields`) holds one of the family's kinds, told apart by a ``kind`` key::

    field: {kind: hashgrid, n_levels: 8}   # that kind, keys over its defaults
    field: hashgrid                        # short form: that kind with its defaults
    field: {resolution: 96}                # no kind: the current kind (the default's)

and on the command line ``field.kind=hashgrid`` / ``field=hashgrid`` (a different kind starts
again from that kind's defaults; the same kind keeps the values) and ``field.resolution=64``.
Keys are checked against the chosen kind; an unknown kind is an error listing the kinds.
:func:`to_dict` writes ``kind`` as the first key of such a section.

**Value checks.** A config class states the allowed range of its numeric keys in a class
variable, and may add a ``validate()`` method for what ranges cannot say (choices of a string,
lengths, relations between keys)::

    @dataclass
    class OptimConfig:
        limits: ClassVar[dict[str, Range]] = {"lr": positive(), "batch": at_least(1),
                                              "dropout": between(0, 1, hi_open=True)}
        lr: float = 1e-3
        ...
        def validate(self) -> None:     # raise invalid("key", "why") naming the key
            ...

A range applies to each item of a list value; NaN and infinities never pass. :func:`from_dict`
(hence :func:`load_config`) checks every section it builds, and :func:`validate` checks a
config built in code (``train_method`` calls it), so a bad value is a :class:`ConfigError`
naming its dotted key (``train.steps: must be >= 1, got -3``) before anything runs.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config file or override that does not fit its dataclass."""


def invalid(key: str, why: str) -> ConfigError:
    """The error of a ``validate()`` hook: ``key`` relative to its section (the section's
    prefix is added by :func:`validate`)."""
    return ConfigError(f"{key}: {why}")


def check_box(key: str, aabb) -> None:
    """A box ``[xmin, ymin, zmin, xmax, ymax, zmax]`` with min < max on every axis, else the
    :func:`invalid` error naming ``key``."""
    if len(aabb) != 6 or not all(lo < hi for lo, hi in zip(aabb[:3], aabb[3:], strict=True)):
        raise invalid(key, f"needs 6 numbers with min < max, got {aabb}")


def check_length(key: str, values, n: int) -> None:
    """``values`` has ``n`` entries (e.g. an RGB background), else the :func:`invalid` error."""
    if len(values) != n:
        raise invalid(key, f"needs {n} numbers, got {values}")


@dataclasses.dataclass(frozen=True)
class Range:
    """The allowed values of a numeric key: ``lo``/``hi`` bounds (None: unbounded), open or
    closed; values must also be finite numbers."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __str__(self) -> str:
        if self.hi is None:
            return f"{'>' if self.lo_open else '>='} {self.lo:g}" if self.lo is not None \
                else "a finite number"
        if self.lo is None:
            return f"{'<' if self.hi_open else '<='} {self.hi:g}"
        return (f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}"
                f"{')' if self.hi_open else ']'}")

    def ok(self, v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        if self.lo is not None and not (v > self.lo if self.lo_open else v >= self.lo):
            return False
        return self.hi is None or (v < self.hi if self.hi_open else v <= self.hi)

    def check(self, value: Any, where: str) -> None:
        items = list(enumerate(value)) if isinstance(value, (list, tuple)) else [(None, value)]
        for i, v in items:
            if v is not None and not self.ok(v):
                at = where if i is None else f"{where}[{i}]"
                raise ConfigError(f"{at}: must be {self}, got {v!r}")


def at_least(lo: float) -> Range:
    """``>= lo``."""
    return Range(lo)


def positive() -> Range:
    """``> 0``."""
    return Range(0, lo_open=True)


def between(lo: float, hi: float, lo_open: bool = False, hi_open: bool = False) -> Range:
    """``lo <= x <= hi`` (or open at either end)."""
    return Range(lo, hi, lo_open, hi_open)


def check_section(cfg: Any, prefix: str = "") -> None:
    """Check one section (not its sub-sections): its ``limits`` and its ``validate()``."""
    for key, rng in getattr(type(cfg), "limits", {}).items():
        rng.check(getattr(cfg, key), f"{prefix}.{key}" if prefix else key)
    hook = getattr(cfg, "validate", None)
    if callable(hook):
        try:
            hook()
        except ConfigError as exc:
            raise ConfigError(f"{prefix}.{exc}" if prefix else str(exc)) from None


def validate(cfg: Any, prefix: str = "") -> None:
    """Check a config and all its sections (see the module docstring); raises
    :class:`ConfigError` naming the dotted key of the first bad value."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            validate(value, f"{prefix}.{f.name}" if prefix else f.name)
    check_section(cfg, prefix)


class TaggedConfig:
    """Base of a tagged union of configs: a family of dataclasses told apart by ``kind``.

    A family is a subclass that declares its own registry, ``kinds: ClassVar[dict[str, type]] =
    {}``; each member is a ``@dataclass`` subclass of it with ``kind: ClassVar[str] = "name"``,
    added with ``Family.register(Member)``. A dataclass field annotated with the family (or one
    member) then takes any registered kind (syntax in the module docstring). The mechanism knows
    nothing about what the configs build.
    """

    kind: ClassVar[str] = ""
    kinds: ClassVar[dict[str, type[TaggedConfig]]]

    @classmethod
    def register(cls, member: type[T]) -> type[T]:
        """Add ``member`` (a dataclass subclass with its ``kind`` set) to the family of ``cls``;
        returns it, so it also works as a class decorator."""
        if "kinds" not in vars(cls) or cls is TaggedConfig:
            raise TypeError(f"{cls.__name__} declares no 'kinds' registry: not a config family")
        if not (isinstance(member, type) and issubclass(member, cls)
                and dataclasses.is_dataclass(member)):
            raise TypeError(f"{member!r} must be a dataclass subclass of {cls.__name__}")
        kind = member.kind
        if not kind or not isinstance(kind, str):
            raise TypeError(f"{member.__name__} must set kind: ClassVar[str] = '<name>'")
        if cls.kinds.get(kind, member) is not member:
            raise ValueError(f"{cls.__name__} kind {kind!r} is already registered by "
                             f"{cls.kinds[kind].__name__}")
        cls.kinds[kind] = member
        return member

    @classmethod
    def kind_class(cls, kind: Any, where: str = "kind") -> type[TaggedConfig]:
        """The member registered as ``kind`` (it must be ``cls`` or a subclass of it), else a
        :class:`ConfigError` naming ``where`` and listing the kinds."""
        valid = {k: m for k, m in getattr(cls, "kinds", {}).items() if issubclass(m, cls)}
        if kind not in valid:
            raise ConfigError(f"{where}: unknown kind {kind!r} (kinds: {', '.join(sorted(valid))})")
        return valid[kind]


def _is_tagged(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, TaggedConfig)


def _tagged_mapping(value: Any, current_kind: str, where: str) -> dict[str, Any]:
    """A tagged section's value (kind name or mapping) -> a mapping with its ``kind`` set."""
    if isinstance(value, str):
        return {"kind": value}
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: expected a kind name or a mapping, got {value!r}")
    if "kind" in value:
        return value
    if not current_kind:
        raise ConfigError(f"{where}: needs a 'kind'")
    return {"kind": current_kind, **value}


def _default_kind(f: dataclasses.Field, tp: Any) -> str:
    """The kind of a tagged dataclass field's default (or of its annotation)."""
    if f.default is not dataclasses.MISSING:
        default = f.default
    elif f.default_factory is not dataclasses.MISSING:
        default = f.default_factory()
    else:
        default = None
    return getattr(default, "kind", "") or tp.kind


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


def _coerce(value: Any, tp: Any, where: str, current_kind: str = "") -> Any:
    """Convert a YAML/override value to the annotated field type ``tp`` (``current_kind``: the
    kind a tagged section without a ``kind`` key takes)."""
    if value is None:
        return None
    tp = _strip_optional(tp)
    if _is_tagged(tp):
        if isinstance(value, tp):
            return value
        return from_dict(tp, _tagged_mapping(value, current_kind or tp.kind, where), prefix=where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping for {tp.__name__}, got {value!r}")
        return from_dict(tp, value, prefix=where)
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: expected one of {', '.join(map(str, choices))}, "
                              f"got {value!r}")
        return value
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
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys. For a
    :class:`TaggedConfig` family, ``data["kind"]`` picks the member (default: ``cls.kind``)."""
    if _is_tagged(cls):
        data = dict(data)
        where = f"{prefix}.kind" if prefix else "kind"
        cls = cls.kind_class(data.pop("kind", cls.kind), where)  # type: ignore[assignment]
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for key, value in data.items():
        where = f"{prefix}.{key}" if prefix else key
        f = _field_named(cls, key, where)
        tp = _strip_optional(hints[key])
        kind = _default_kind(f, tp) if _is_tagged(tp) else ""
        kwargs[key] = _coerce(value, hints[key], where, kind)
    try:
        obj = cls(**kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # a __post_init__ check
        raise ConfigError(f"{prefix or cls.__name__}: {exc}") from exc
    check_section(obj, prefix)
    return obj


def to_dict(cfg: Any) -> dict[str, Any]:
    """Dataclass -> plain nested dict (tuples become lists), ready for YAML."""
    def convert(v: Any) -> Any:
        if dataclasses.is_dataclass(v):
            out = {"kind": v.kind} if isinstance(v, TaggedConfig) else {}
            out.update({f.name: convert(getattr(v, f.name)) for f in dataclasses.fields(v)})
            return out
        if isinstance(v, (list, tuple)):
            return [convert(x) for x in v]
        if isinstance(v, Path):
            return str(v)
        return v

    return convert(cfg)


def apply_overrides(data: dict[str, Any], overrides: list[str], cls: type) -> dict[str, Any]:
    """Apply ``a.b.c=value`` overrides (value parsed as YAML), in order, to a nested dict of
    dataclass ``cls``, checking keys so that typos are reported with a suggestion. Tagged
    sections follow their current kind: ``field.kind=hashgrid`` first, then ``field.n_levels=8``."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override '{item}' must look like key.sub=value")
        dotted, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as exc:
            raise ConfigError(f"override '{item}': the value is not valid YAML "
                              f"({getattr(exc, 'problem', None) or exc})") from exc
        keys = dotted.split(".")
        node, node_cls = data, cls
        for depth, key in enumerate(keys[:-1]):  # the sections on the way must exist
            where = ".".join(keys[: depth + 1])
            if key == "kind" and _is_tagged(node_cls):
                raise ConfigError(f"'{where}' is not a section")
            f = _field_named(node_cls, key, where)
            sub_cls = _strip_optional(typing.get_type_hints(node_cls)[key])
            sub = node.get(key)
            if _is_tagged(sub_cls):
                kind = sub.get("kind") if isinstance(sub, dict) else _default_kind(f, sub_cls)
                sub_cls = sub_cls.kind_class(kind, where)
            elif not dataclasses.is_dataclass(sub_cls):
                raise ConfigError(f"'{where}' is not a section")
            node, node_cls = sub if isinstance(sub, dict) else {}, sub_cls
        for key in reversed(keys[1:]):
            value = {key: value}
        _merge(data, {keys[0]: value}, cls)
    return data


def _field_named(cls: type, key: str, where: str) -> dataclasses.Field:
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if key not in fields:
        of_kind = f" of kind '{cls.kind}'" if _is_tagged(cls) else ""
        raise ConfigError(f"unknown config key '{where}'{of_kind}" + _suggest(key, list(fields)))
    return fields[key]


def _merge(data: dict[str, Any], new: dict[str, Any], cls: type, prefix: str = "") -> None:
    """Merge ``new`` into ``data`` (plain nested dicts of dataclass ``cls``), checking keys.
    Sections merge key by key; a tagged section whose kind changes restarts from that kind's
    defaults."""
    hints = typing.get_type_hints(cls)
    for key, value in new.items():
        where = f"{prefix}.{key}" if prefix else key
        f = _field_named(cls, key, where)
        tp = _strip_optional(hints[key])
        cur = data.get(key)
        if _is_tagged(tp) and isinstance(value, (str, dict)):
            cur = cur if isinstance(cur, dict) else {}
            value = _tagged_mapping(value, cur.get("kind") or _default_kind(f, tp), where)
            member = tp.kind_class(value["kind"], f"{where}.kind")
            if cur.get("kind") != member.kind:
                cur = to_dict(member())
            _merge(cur, {k: v for k, v in value.items() if k != "kind"}, member, where)
            data[key] = cur
        elif dataclasses.is_dataclass(tp) and isinstance(value, dict) and isinstance(cur, dict):
            _merge(cur, value, tp, where)
        else:
            data[key] = value


#: the configs that travel inside the package (``neural3d/_configs``, a link to the
#: repository's ``configs/`` that a wheel carries as package data)
PACKAGED_CONFIGS = Path(__file__).resolve().parent / "_configs"


def packaged_configs() -> dict[str, Path]:
    """The packaged configs by name: their path under :data:`PACKAGED_CONFIGS` without
    ``.yaml`` (``ssdnerf_toycars``, ``fit/default``)."""
    if not PACKAGED_CONFIGS.is_dir():
        return {}
    return {p.relative_to(PACKAGED_CONFIGS).with_suffix("").as_posix(): p
            for p in sorted(PACKAGED_CONFIGS.rglob("*.yaml"))}


def find_config(path: str | Path) -> Path:
    """The YAML file of ``--config``: an existing file, else a packaged config by name (no
    ``.yaml``, e.g. ``ssdnerf_toycars``, from any working directory). Not found: a one-line
    :class:`ConfigError` (for a bare name, listing the packaged names)."""
    p = Path(path)
    if p.is_file():
        return p
    if p.suffix or p.exists():
        raise ConfigError(f"config file not found: {p}")
    named = packaged_configs()
    if str(path) in named:
        return named[str(path)]
    raise ConfigError(f"config not found: {str(path)!r} is neither a file nor a packaged config "
                      f"(packaged: {', '.join(named) or 'none'})")


def load_config(cls: type[T], path: str | Path | None = None,
                overrides: list[str] | None = None) -> T:
    """Defaults of ``cls`` <- YAML file at ``path`` (a file, or a packaged config by name:
    :func:`find_config`) <- dotted ``overrides``."""
    data: dict[str, Any] = to_dict(cls())
    if path is not None:
        path = find_config(path)
        try:
            loaded = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as exc:
            where = getattr(exc, "problem_mark", None)
            at = f" (line {where.line + 1}, column {where.column + 1})" if where else ""
            why = getattr(exc, "problem", None) or type(exc).__name__
            raise ConfigError(f"{path}: YAML syntax error{at}: {why}") from exc
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"{path}: cannot read config ({exc})") from exc
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: top level must be a mapping")
        _merge(data, loaded, cls)
    apply_overrides(data, overrides or [], cls)
    return from_dict(cls, data)


def save_config(cfg: Any, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
