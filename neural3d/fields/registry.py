"""Field configs and their registry: a config knows what it builds.

Each field module registers a config dataclass (:func:`register_field`): ``kind`` (its name),
``target`` (the field class) and one dataclass field per constructor argument, with
``neural3d fit``'s defaults. :class:`FieldConfig` is a :class:`~neural3d.config.TaggedConfig`
family, so a config section annotated with it takes any registered kind from YAML
(``field: {kind: hashgrid, n_levels: 8}``, or ``field: hashgrid``) and dotted overrides
(``field.kind=mlp``, ``field.hidden=64``); :func:`build_field` turns it into the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from neural3d.config import TaggedConfig
from neural3d.fields.base import Field

#: kind -> field class, filled by :func:`register_field`
FIELDS: dict[str, type[Field]] = {}


@dataclass
class FieldConfig(TaggedConfig):
    """Base of the field configs (tagged on ``kind``). A member sets the class variables
    ``kind`` and ``target`` and declares the target's constructor arguments (all but ``aabb``,
    ``device``) as its dataclass fields."""

    kinds: ClassVar[dict[str, type[TaggedConfig]]] = {}
    target: ClassVar[type[Field]]

    def arguments(self) -> dict[str, Any]:
        """The target's constructor arguments: every dataclass field by name."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def build(self, aabb: Sequence[float], device: str | torch.device | None = None) -> Field:
        """The field in the box ``aabb`` (6 floats). ``device`` is where it will run; fields
        whose implementation depends on it (the hash grid: tiny-cuda-nn on CUDA) use it."""
        return self.target(aabb=list(aabb), **self.arguments())


#: kind -> field config class (the registry of the :class:`FieldConfig` family)
FIELD_CONFIGS: dict[str, type[FieldConfig]] = FieldConfig.kinds  # type: ignore[assignment]


def register_field(config_cls: type[FieldConfig]) -> type[FieldConfig]:
    """Class decorator for a field config: registers its ``kind`` (config and field class)."""
    FieldConfig.register(config_cls)
    FIELDS[config_cls.kind] = config_cls.target
    return config_cls


def build_field(cfg: FieldConfig, aabb: Sequence[float] | torch.Tensor,
                device: str | torch.device | None = None) -> Field:
    """Build the field ``cfg`` describes in the box ``aabb`` ``[xmin, ymin, zmin, xmax, ymax,
    zmax]``, on ``device`` (default: the CPU, where modules are created)."""
    box = aabb.tolist() if isinstance(aabb, torch.Tensor) else list(aabb)
    field = cfg.build(box, device)
    return field if device is None else field.to(device)
