"""Triplane field: three axis-aligned feature planes decoded by a small MLP.

Planes are ``[B, 3, C, H, W]`` in the order (xy, xz, yz): plane 0 is indexed by (x, y), plane 1
by (x, z), plane 2 by (y, z), with grid_sample's convention (first grid coordinate = width axis)
and ``align_corners=False``. The planes can be a parameter of the field (single-object fitting),
or passed to ``forward(..., planes=...)`` by an auto-decoder (SSDNeRF latents), a generator or an
encoder: the decoder (:class:`TriplaneDecoder`) is a separate module so it can be shared.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from neural3d.config import Range, at_least, between
from neural3d.fields.base import Field, density_activation, normalize_aabb, tv_loss, widened_sigmoid
from neural3d.fields.encodings import PositionalEncoding, spherical_harmonics
from neural3d.fields.registry import FieldConfig, register_field
from neural3d.fields.triplane_sample import triplane_sample


def sample_triplane(planes: torch.Tensor, xn: torch.Tensor, aggregate: str = "sum",
                    mode: str = "bilinear") -> torch.Tensor:
    """Sample planes ``[B, 3, C, H, W]`` at normalised points ``xn [B, N, 3]`` in ``[-1, 1]``:
    :func:`~neural3d.fields.triplane_sample.triplane_sample` without a box (fused kernels, or
    the grid_sample reference).

    Returns ``[B, N, C]`` (``sum``/``mean``/``prod``) or ``[B, N, 3C]`` (``concat``).
    """
    return triplane_sample(planes, xn, None, aggregate, mode=mode)


class TriplaneDecoder(nn.Module):
    """Small MLP: plane features ``[N, C_in]`` -> raw density ``[N]`` and output ``[N, C_out]``.

    ``rgb=True`` applies a sigmoid to the output (colour in [0, 1]); otherwise raw features.
    """

    def __init__(self, in_channels: int, hidden: int = 64, layers: int = 2, out_channels: int = 3,
                 rgb: bool = True, density_activation: str = "softplus"):
        super().__init__()
        mods: list[nn.Module] = []
        d = in_channels
        for _ in range(layers):
            mods += [nn.Linear(d, hidden), nn.SiLU()]
            d = hidden
        self.net = nn.Sequential(*mods)
        self.out = nn.Linear(d, 1 + out_channels)
        self.rgb, self.out_channels, self.act = rgb, out_channels, density_activation

    def forward(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.out(self.net(feats))
        density = density_activation(h[..., 0], self.act)
        out = h[..., 1:]
        if self.rgb:
            out = widened_sigmoid(out)
        return density, out


class ViewDependentDecoder(nn.Module):
    """SSDNeRF's triplane decoder (Lakonik/SSDNeRF ``TriPlaneDecoder`` with ``base_layers =
    [C_in, hidden]``, ``use_dir_enc``, ``dir_layers = [16, hidden]``): features ``[N, C_in]`` and
    unit view directions ``[N, 3]`` -> raw density ``[N]`` and colour ``[N, 3]``::

        h = W_base f                              (no activation yet)
        density = act(W_sigma silu(h))
        colour = widened_sigmoid(W_rgb silu(h + W_dir SH(d)))   (SH: 16 real harmonics)

    ``W_dir`` starts at zero, so the colour is view-independent until the data asks otherwise;
    the other layers start Xavier-uniform as in the reference."""

    def __init__(self, in_channels: int, hidden: int = 64, density_activation: str = "trunc_exp"):
        super().__init__()
        self.base = nn.Linear(in_channels, hidden)
        self.density = nn.Linear(hidden, 1)
        self.direction = nn.Linear(16, hidden)
        self.colour = nn.Linear(hidden, 3)
        for lin in (self.base, self.density, self.colour):
            nn.init.xavier_uniform_(lin.weight)
            nn.init.zeros_(lin.bias)
        nn.init.zeros_(self.direction.weight)
        nn.init.zeros_(self.direction.bias)
        self.act = density_activation

    def forward(self, feats: torch.Tensor, dirs: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.base(feats)
        density = density_activation(self.density(F.silu(h))[..., 0], self.act)
        sh = spherical_harmonics(F.normalize(dirs, dim=-1).to(feats.dtype))
        return density, widened_sigmoid(self.colour(F.silu(h + self.direction(sh))))


class TriplaneField(Field):
    """Triplane + decoder as a field (protocol in INTERFACES.md).

    ``forward(positions [R,S,3], directions=None, planes=None)`` -> ``(density [R,S],
    features [R,S,C])``. With ``planes [B,3,C,H,W]`` given and ``B > 1``, positions are
    ``[B, R, S, 3]`` and outputs gain the leading ``B``. Positions are world coordinates inside
    ``aabb``; outside it the density is 0.

    The own planes (``learn_planes=True``) are its table parameters; ``tv_weight > 0`` adds
    ``{"tv": tv_weight * tv_loss(planes)}`` to :meth:`regularizers`.

    ``decoder="mlp"`` (default): :class:`TriplaneDecoder`, directions ignored;
    ``decoder="view_sh"``: :class:`ViewDependentDecoder` (``layers``, ``out_channels`` and
    ``rgb`` do not apply), which needs ``directions`` shaped like ``positions``.

    ``coord_freqs = n > 0`` appends the positional encoding (``n`` frequencies, input included)
    of each point's normalised coordinates ``[-1, 1]^3`` to the plane features the decoder
    reads (as pixelNeRF's MLP reads the point's position); 0 (default): features only.
    """

    def __init__(self, resolution: int = 96, channels: int = 16, hidden: int = 64,
                 layers: int = 2, out_channels: int = 3, rgb: bool = True,
                 aggregate: str = "sum", aabb: Sequence[float] = (-1, -1, -1, 1, 1, 1),
                 learn_planes: bool = True, init_std: float = 0.1,
                 density_activation: str = "softplus", tv_weight: float = 0.0,
                 decoder: str = "mlp", coord_freqs: int = 0):
        super().__init__(aabb)
        self.tv_weight = tv_weight
        self.aggregate, self.channels, self.resolution = aggregate, channels, resolution
        in_ch = 3 * channels if aggregate == "concat" else channels
        self.coord_encoding = PositionalEncoding(3, coord_freqs) if coord_freqs > 0 else None
        if self.coord_encoding is not None:
            in_ch += self.coord_encoding.out_dim
        if decoder == "mlp":
            self.decoder = TriplaneDecoder(in_ch, hidden, layers, out_channels, rgb,
                                           density_activation)
        elif decoder == "view_sh":
            self.decoder = ViewDependentDecoder(in_ch, hidden, density_activation)
        else:
            raise ValueError(f"TriplaneField: decoder must be 'mlp' or 'view_sh', got {decoder!r}")
        if learn_planes:
            self.planes = nn.Parameter(torch.randn(1, 3, channels, resolution, resolution)
                                       * init_std)
        else:
            self.register_parameter("planes", None)

    def forward(self, positions: torch.Tensor, directions: torch.Tensor | None = None,
                planes: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        self.check_inputs(positions)
        planes = self.planes if planes is None else planes
        if planes is None:
            raise ValueError("TriplaneField built with learn_planes=False needs planes=...")
        B = planes.shape[0]
        lead = positions.shape[:-1]
        if B == 1 and (positions.dim() < 4 or positions.shape[0] != 1):
            xn = normalize_aabb(positions, self.aabb).reshape(1, -1, 3)
            out_shape = lead
        else:
            if positions.shape[0] != B:
                raise ValueError(f"planes batch {B} needs positions [B, ...], got "
                                 f"{tuple(positions.shape)}")
            xn = normalize_aabb(positions, self.aabb).reshape(B, -1, 3)
            out_shape = lead
        feats = sample_triplane(planes, xn, self.aggregate)
        if self.coord_encoding is not None:
            feats = torch.cat([feats, self.coord_encoding(xn).to(feats.dtype)], -1)
        if self.view_dependent:
            if directions is None or directions.shape != positions.shape:
                raise ValueError("TriplaneField(decoder='view_sh') needs directions shaped like "
                                 f"positions {tuple(positions.shape)}, got "
                                 f"{None if directions is None else tuple(directions.shape)}")
            density, out = self.decoder(feats, directions.reshape(feats.shape[:-1] + (3,)))
        else:
            density, out = self.decoder(feats)
        density = torch.where(self.inside(xn), density, torch.zeros_like(density))
        return density.reshape(out_shape), out.reshape(*out_shape, out.shape[-1])

    @property
    def view_dependent(self) -> bool:
        """Whether the decoder reads view directions (``decoder="view_sh"``)."""
        return isinstance(self.decoder, ViewDependentDecoder)

    def table_parameters(self) -> list[nn.Parameter]:
        return [] if self.planes is None else [self.planes]

    def regularizers(self) -> dict[str, torch.Tensor]:
        if self.planes is None or self.tv_weight <= 0:
            return {}
        return {"tv": self.tv_weight * tv_loss(self.planes)}

    @torch.no_grad()
    def upsample(self, resolution: int) -> None:
        """Resample the own planes to ``resolution`` (coarse-to-fine fitting)."""
        if self.planes is None or resolution == self.planes.shape[-1]:
            return
        B, P, C, H, W = self.planes.shape
        new = F.interpolate(self.planes.data.reshape(B * P, C, H, W), size=(resolution,) * 2,
                            mode="bilinear", align_corners=False)
        self.planes = nn.Parameter(new.reshape(B, P, C, resolution, resolution))
        self.resolution = resolution


@register_field
@dataclass
class TriplaneFieldConfig(FieldConfig):
    """:class:`TriplaneField` with ``neural3d fit``'s defaults. ``tv_weight``: total variation
    on the planes; fit's tuned value is 1e-2 (+1.5 dB held-out PSNR vs 1e-4). ``decoder``:
    ``mlp`` (colour from position only) or ``view_sh`` (:class:`ViewDependentDecoder`: colour
    also from the view direction, which a surface seen from both sides needs, e.g. an open
    scan whose two sides are lit differently)."""

    kind: ClassVar[str] = "triplane"
    target: ClassVar[type[Field]] = TriplaneField
    limits: ClassVar[dict[str, Range]] = {
        "resolution": between(1, 4096), "channels": at_least(1), "hidden": at_least(1),
        "layers": at_least(0), "init_std": at_least(0), "tv_weight": at_least(0),
        "out_channels": at_least(1)}
    resolution: int = 128
    channels: int = 12
    hidden: int = 64
    layers: int = 2
    aggregate: Literal["sum", "mean", "prod", "concat"] = "sum"
    init_std: float = 0.1
    density_activation: Literal["trunc_exp", "softplus", "relu"] = "trunc_exp"
    tv_weight: float = 1e-2
    out_channels: int = 3
    rgb: bool = True
    decoder: Literal["mlp", "view_sh"] = "mlp"
