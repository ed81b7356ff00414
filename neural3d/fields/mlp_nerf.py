"""The original NeRF MLP with positional encoding (view dependence optional)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
from torch import nn

from neural3d.config import Range, at_least
from neural3d.fields.base import Field, density_activation, normalize_aabb, widened_sigmoid
from neural3d.fields.encodings import PositionalEncoding
from neural3d.fields.registry import FieldConfig, register_field


class MLPNeRF(Field):
    """``positions [R,S,3]`` (world, inside ``aabb``), ``directions [R,S,3]`` (unit) ->
    ``density [R,S] >= 0``, ``rgb [R,S,3]`` in [0, 1] (or raw features if ``rgb=False``).

    Positions are normalised to ``[-1, 1]^3`` before the encoding; density is 0 outside the box.
    ``view_dependent=False`` ignores directions (they may then be None).
    """

    def __init__(self, pos_freqs: int = 8, dir_freqs: int = 4, hidden: int = 128,
                 layers: int = 4, skips: Sequence[int] = (2,), out_channels: int = 3,
                 rgb: bool = True, view_dependent: bool = False,
                 aabb: Sequence[float] = (-1, -1, -1, 1, 1, 1),
                 density_activation: str = "softplus"):
        super().__init__(aabb)
        self.pos_enc = PositionalEncoding(3, pos_freqs)
        self.view_dependent = view_dependent
        self.skips = set(skips)
        d_in = self.pos_enc.out_dim
        self.layers = nn.ModuleList()
        d = d_in
        for i in range(layers):
            if i in self.skips and i > 0:
                d += d_in
            self.layers.append(nn.Linear(d, hidden))
            d = hidden
        self.density_head = nn.Linear(hidden, 1)
        if view_dependent:
            self.dir_enc = PositionalEncoding(3, dir_freqs)
            self.feat = nn.Linear(hidden, hidden)
            self.color = nn.Sequential(nn.Linear(hidden + self.dir_enc.out_dim, hidden // 2),
                                       nn.ReLU(), nn.Linear(hidden // 2, out_channels))
        else:
            self.color = nn.Linear(hidden, out_channels)
        self.rgb, self.act = rgb, density_activation

    def forward(self, positions: torch.Tensor, directions: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_inputs(positions)
        xn = normalize_aabb(positions, self.aabb)
        enc = self.pos_enc(xn)
        h = enc
        for i, layer in enumerate(self.layers):
            if i in self.skips and i > 0:
                h = torch.cat([h, enc], dim=-1)
            h = torch.relu(layer(h))
        density = density_activation(self.density_head(h)[..., 0], self.act)
        density = torch.where(self.inside(xn), density, torch.zeros_like(density))
        if self.view_dependent:
            if directions is None:
                raise ValueError("a view-dependent MLPNeRF needs directions")
            out = self.color(torch.cat([self.feat(h), self.dir_enc(directions)], dim=-1))
        else:
            out = self.color(h)
        if self.rgb:
            out = widened_sigmoid(out)
        return density, out


@register_field
@dataclass
class MLPFieldConfig(FieldConfig):
    """:class:`MLPNeRF` with ``neural3d fit``'s defaults."""

    kind: ClassVar[str] = "mlp"
    target: ClassVar[type[Field]] = MLPNeRF
    limits: ClassVar[dict[str, Range]] = {
        "pos_freqs": at_least(0), "hidden": at_least(1), "layers": at_least(1),
        "skips": at_least(0), "dir_freqs": at_least(0), "out_channels": at_least(1)}
    pos_freqs: int = 8
    hidden: int = 128
    layers: int = 4
    skips: tuple[int, ...] = (2,)
    density_activation: Literal["trunc_exp", "softplus", "relu"] = "trunc_exp"
    view_dependent: bool = False
    dir_freqs: int = 4
    out_channels: int = 3
    rgb: bool = True
