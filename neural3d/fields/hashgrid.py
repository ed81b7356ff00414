"""Hash-grid field (instant-NGP style): hash encoding + tiny density and colour MLPs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from neural3d.config import Range, at_least, between
from neural3d.fields.base import Field, density_activation, normalize_aabb, widened_sigmoid
from neural3d.fields.encodings import make_hash_encoding
from neural3d.fields.registry import FieldConfig, register_field


class HashGridField(Field):
    """``positions [R,S,3]`` (world, inside ``aabb``) -> ``density [R,S] >= 0``,
    ``rgb [R,S,3]`` in [0, 1]. The box is mapped to the hash grid's ``[0, 1]^3``; density is 0
    outside. Directions are ignored (view-independent colour: objects on white backgrounds).
    ``backend`` = ``auto`` (tcnn on CUDA when importable, else torch) | ``torch`` | ``tcnn``.
    The hash encoding's parameters are its table parameters.
    """

    def __init__(self, n_levels: int = 12, n_features: int = 2, log2_hashmap_size: int = 17,
                 base_resolution: int = 8, max_resolution: int = 256, hidden: int = 64,
                 geo_features: int = 15, out_channels: int = 3, rgb: bool = True,
                 aabb: Sequence[float] = (-1, -1, -1, 1, 1, 1), backend: str = "auto",
                 device: str | torch.device | None = None,
                 density_activation: str = "trunc_exp"):
        super().__init__(aabb)
        self.encoding = make_hash_encoding(
            device=device, n_levels=n_levels, n_features=n_features,
            log2_hashmap_size=log2_hashmap_size, base_resolution=base_resolution,
            max_resolution=max_resolution, backend=backend)
        self.density_net = nn.Sequential(nn.Linear(self.encoding.out_dim, hidden), nn.ReLU(),
                                         nn.Linear(hidden, 1 + geo_features))
        self.color_net = nn.Sequential(nn.Linear(geo_features, hidden), nn.ReLU(),
                                       nn.Linear(hidden, out_channels))
        self.rgb, self.act = rgb, density_activation

    def forward(self, positions: torch.Tensor, directions: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_inputs(positions)
        lead = positions.shape[:-1]
        xn = normalize_aabb(positions, self.aabb).reshape(-1, 3)
        h = self.density_net(self.encoding((xn + 1) * 0.5))
        density = density_activation(h[:, 0], self.act)
        density = torch.where(self.inside(xn), density, torch.zeros_like(density))
        out = self.color_net(h[:, 1:])
        if self.rgb:
            out = widened_sigmoid(out)
        return density.reshape(lead), out.reshape(*lead, out.shape[-1])

    def table_parameters(self) -> list[nn.Parameter]:
        return list(self.encoding.parameters())


@register_field
@dataclass
class HashGridFieldConfig(FieldConfig):
    """:class:`HashGridField` with ``neural3d fit``'s defaults; ``backend`` picks the hash
    encoding (``auto``: tiny-cuda-nn when building for CUDA and importable)."""

    kind: ClassVar[str] = "hashgrid"
    target: ClassVar[type[Field]] = HashGridField
    limits: ClassVar[dict[str, Range]] = {
        "n_levels": at_least(1), "n_features": at_least(1), "log2_hashmap_size": between(1, 30),
        "base_resolution": at_least(1), "max_resolution": at_least(1), "hidden": at_least(1),
        "geo_features": at_least(0), "out_channels": at_least(1)}
    n_levels: int = 12
    n_features: int = 2
    log2_hashmap_size: int = 17
    base_resolution: int = 8
    max_resolution: int = 256
    hidden: int = 64
    geo_features: int = 15
    density_activation: Literal["trunc_exp", "softplus", "relu"] = "trunc_exp"
    backend: Literal["auto", "torch", "tcnn"] = "auto"
    out_channels: int = 3
    rgb: bool = True

    def build(self, aabb: Sequence[float], device: str | torch.device | None = None) -> Field:
        return HashGridField(aabb=list(aabb), device=device, **self.arguments())
