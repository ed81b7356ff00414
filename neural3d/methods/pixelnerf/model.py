"""pixelNeRF-lite: an image encoder, pixel-aligned features, ResNet-FC radiance fields.

Shapes: ``B`` objects, each seen in ``V`` input views (``V = 1`` in training, as the paper's
single-view models); ``P`` query points per object. Cameras are OpenCV (:mod:`neural3d.cameras`):
a point ``x`` goes into input view ``v``'s camera frame by ``w2c[v]``, and to continuous pixel
coordinates by ``u = fx * X/Z + cx``, ``v = fy * Y/Z + cy`` (pixel ``(i, j)``'s centre at
``(i + 0.5, j + 0.5)``). The feature map (``H/2 x W/2``) covers the image, so it is sampled at
``2 u / W - 1`` with ``grid_sample(align_corners=False)`` (border padding for points that
project outside the image, as pixelNeRF).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from neural3d.cameras import Cameras
from neural3d.fields.base import density_activation
from neural3d.fields.encodings import PositionalEncoding
from neural3d.methods.pixelnerf.config import PixelNeRFConfig
from neural3d.render import RendererConfig, VolumeRenderer


def _norm(channels: int) -> nn.GroupNorm:
    return nn.GroupNorm(math.gcd(8, channels), channels)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs, GroupNorm) with a strided 1x1 projection shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.norm1 = _norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.norm2 = _norm(c_out)
        self.short = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), _norm(c_out))
                      if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = torch.relu(self.norm1(self.conv1(x)))
        return torch.relu(self.norm2(self.conv2(h)) + self.short(x))


class ImageEncoder(nn.Module):
    """``images [N, H, W, 3]`` in [0, 1] -> ``features [N, sum(channels), H/2, W/2]``.

    A 7x7 stride-2 stem (``channels[0]``, H/2) and one stride-2 :class:`BasicBlock` per further
    entry (H/4, H/8, ...); every map is upsampled (bilinear) to H/2 and concatenated, as
    pixelNeRF's ResNet34 features (conv1, layer1-3). Images are scaled to [-1, 1] first."""

    def __init__(self, channels: list[int]):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, channels[0], 7, 2, 3, bias=False),
                                  _norm(channels[0]), nn.ReLU())
        self.stages = nn.ModuleList(BasicBlock(a, b) for a, b in zip(channels[:-1], channels[1:],
                                                                      strict=True))
        self.out_dim = sum(channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.stem(images.permute(0, 3, 1, 2) * 2.0 - 1.0)
        maps = [x]
        for stage in self.stages:
            x = stage(x)
            maps.append(x)
        size = maps[0].shape[-2:]
        return torch.cat([maps[0]] + [F.interpolate(m, size=size, mode="bilinear",
                                                    align_corners=False) for m in maps[1:]], 1)


class ResBlockFC(nn.Module):
    """Pre-activation residual FC block ``x + fc1(relu(fc0(relu(x))))``; ``fc1`` starts at 0."""

    def __init__(self, hidden: int):
        super().__init__()
        self.fc0, self.fc1 = nn.Linear(hidden, hidden), nn.Linear(hidden, hidden)
        nn.init.kaiming_normal_(self.fc0.weight, nonlinearity="relu")
        nn.init.zeros_(self.fc0.bias)
        nn.init.zeros_(self.fc1.weight)
        nn.init.zeros_(self.fc1.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc1(torch.relu(self.fc0(torch.relu(x))))


class ResnetFC(nn.Module):
    """pixelNeRF's MLP: ``x [B, V, P, d_in]`` and the projected image features
    ``zs [B, V, P, combine_layer * hidden]`` -> ``[B, P, 4]`` (raw rgb, raw density).

    ``h = lin_in(x)``; before each block ``i < combine_layer``: ``h += lin_z_i(z)``; at block
    ``combine_layer`` (after the last block when it equals ``blocks``) ``h`` is averaged over
    the ``V`` views. The ``lin_z_i`` are one linear layer ``d_feat -> combine_layer * hidden``,
    applied to the feature *map* (:meth:`feature_map`) before it is sampled: bilinear sampling
    (weights summing to one) commutes with an affine map, so this equals pixelNeRF's
    ``lin_z(sample(map))`` at a fraction of the cost (texels, not points)."""

    def __init__(self, d_in: int, d_feat: int, hidden: int, blocks: int, combine_layer: int):
        super().__init__()
        self.combine_layer, self.hidden = combine_layer, hidden
        self.lin_in = nn.Linear(d_in, hidden)
        self.lin_z = nn.Linear(d_feat, hidden * combine_layer) if combine_layer else None
        self.blocks = nn.ModuleList(ResBlockFC(hidden) for _ in range(blocks))
        self.lin_out = nn.Linear(hidden, 4)
        for lin in (self.lin_in, self.lin_z, self.lin_out):
            if lin is not None:
                nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
                nn.init.zeros_(lin.bias)

    def feature_map(self, features: torch.Tensor) -> torch.Tensor | None:
        """``lin_z`` on every texel: ``[..., d_feat, h, w] -> [..., combine * hidden, h, w]``
        (None without feature layers)."""
        if self.lin_z is None:
            return None
        return self.lin_z(features.movedim(-3, -1)).movedim(-1, -3)

    def forward(self, x: torch.Tensor, z: torch.Tensor | None) -> torch.Tensor:
        h = self.lin_in(x)
        zs = z.split(self.hidden, -1) if z is not None else ()
        for i, block in enumerate(self.blocks):
            if i == self.combine_layer:
                h = h.mean(1, keepdim=True)
            if i < self.combine_layer:
                h = h + zs[i]
            h = block(h)
        if self.combine_layer == len(self.blocks):
            h = h.mean(1, keepdim=True)
        return self.lin_out(torch.relu(h))[:, 0]


@dataclass
class Encoded:
    """The state of an encoded object batch: ``features [B, V, C, h, w]``, input cameras'
    ``w2c [B, V, 4, 4]`` and ``intrinsics [B, V, 4]`` (fx, fy, cx, cy in pixels) and the input
    image size ``(width, height)``."""

    features: torch.Tensor
    w2c: torch.Tensor
    intrinsics: torch.Tensor
    size: tuple[int, int]

    def to(self, device) -> Encoded:
        return Encoded(self.features.to(device), self.w2c.to(device),
                       self.intrinsics.to(device), self.size)


def camera_tensors(cams: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """``(w2c [N, 4, 4], intrinsics [N, 4])`` of ``N`` cameras (what the model's forward takes:
    plain tensors pass through DDP)."""
    return cams.w2c, torch.stack([cams.fx, cams.fy, cams.cx, cams.cy], -1)


class PixelNeRFModel(nn.Module):
    """Encoder + coarse (and fine) ResNet-FC + the shared :class:`VolumeRenderer` (white
    background, rays clipped to ``model.aabb``)."""

    def __init__(self, cfg: PixelNeRFConfig):
        super().__init__()
        m = cfg.model
        self.cfg = cfg
        self.encoder = ImageEncoder(list(m.encoder_channels))
        self.pos_enc = PositionalEncoding(3, m.pos_freqs)
        self.freq_factor = m.freq_factor
        d_in = self.pos_enc.out_dim + 3

        def mlp() -> ResnetFC:
            return ResnetFC(d_in, self.encoder.out_dim, m.mlp_hidden, m.mlp_blocks,
                            m.combine_layer)

        self.coarse = mlp()
        self.fine = mlp() if m.separate_fine and m.n_importance > 0 else None
        self.renderer = VolumeRenderer(RendererConfig(
            n_samples=m.n_samples, n_importance=m.n_importance, aabb=tuple(m.aabb),
            white_background=True))

    # ------------------------------------------------------------------ encoding
    def encode(self, images: torch.Tensor, w2c: torch.Tensor, intrinsics: torch.Tensor
               ) -> Encoded:
        """``images [B, V, H, W, 3]``, ``w2c [B, V, 4, 4]``, ``intrinsics [B, V, 4]``."""
        B, V, H, W = images.shape[:4]
        feats = self.encoder(images.reshape(B * V, H, W, 3))
        return Encoded(feats.reshape(B, V, *feats.shape[1:]), w2c, intrinsics, (W, H))

    def encode_views(self, images: torch.Tensor, cams: Cameras) -> Encoded:
        """One object from its ``V`` posed views ``images [V, H, W, 3]`` (features averaged
        over the views inside the MLPs)."""
        w2c, intr = camera_tensors(cams)
        dev = next(self.parameters()).device
        return self.encode(images[None].to(dev), w2c[None].to(dev), intr[None].to(dev))

    # ------------------------------------------------------------------ querying
    @staticmethod
    def project(state: Encoded, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """World ``points [B, P, 3]`` -> ``(camera-frame xyz [B, V, P, 3], uv [B, V, P, 2])``
        in each input view (uv in pixels, centres at +0.5)."""
        R, t = state.w2c[..., :3, :3], state.w2c[..., :3, 3]
        xyz = torch.einsum("bvij,bpj->bvpi", R, points) + t[:, :, None]
        f, c = state.intrinsics[..., None, :2], state.intrinsics[..., None, 2:]
        uv = f * xyz[..., :2] / xyz[..., 2:].clamp_min(1e-6) + c
        return xyz, uv

    @staticmethod
    def sample_features(maps: torch.Tensor, size: tuple[int, int], uv: torch.Tensor
                        ) -> torch.Tensor:
        """Bilinear samples of feature maps ``[B, V, C, h, w]`` that cover images of ``size``
        ``(W, H)`` at pixel coordinates ``uv [B, V, P, 2]`` -> ``[B, V, P, C]``."""
        B, V, C, h, w = maps.shape
        W, H = size
        scale = uv.new_tensor([2.0 / W, 2.0 / H])
        grid = (uv * scale - 1.0).reshape(B * V, -1, 1, 2)
        out = F.grid_sample(maps.reshape(B * V, C, h, w), grid, mode="bilinear",
                            padding_mode="border", align_corners=False)   # [BV, C, P, 1]
        return out[..., 0].transpose(1, 2).reshape(B, V, -1, C)

    def query(self, state: Encoded, points: torch.Tensor, dirs: torch.Tensor,
              net: ResnetFC, maps: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """``points, dirs [B, P, 3]`` (world) -> ``density [B, P]``, ``rgb [B, P, 3]``;
        ``maps``: ``net.feature_map(state.features)`` when already computed."""
        xyz, uv = self.project(state, points)
        d_cam = torch.einsum("bvij,bpj->bvpi", state.w2c[..., :3, :3], dirs)
        x = torch.cat([self.pos_enc(xyz * (self.freq_factor / math.pi)), d_cam], -1)
        if maps is None:
            maps = net.feature_map(state.features)
        raw = net(x, None if maps is None else self.sample_features(maps, state.size, uv))
        return (density_activation(raw[..., 3], self.cfg.model.density_activation),
                torch.sigmoid(raw[..., :3]))

    def fields(self, state: Encoded):
        """``(coarse field, fine field or None)`` for the renderer: ``positions [R, S, 3]`` of
        ``R = B * N`` rays (object-major) -> ``(density [R, S], rgb [R, S, 3])``."""
        B = state.features.shape[0]

        def make(net: ResnetFC):
            maps = net.feature_map(state.features)   # once per render, not per chunk

            def fld(pos: torch.Tensor, dirs: torch.Tensor):
                R, S = pos.shape[:2]
                sigma, rgb = self.query(state, pos.reshape(B, -1, 3), dirs.reshape(B, -1, 3),
                                        net, maps)
                return sigma.reshape(R, S), rgb.reshape(R, S, 3)
            return fld

        return make(self.coarse), (make(self.fine) if self.fine is not None else None)

    def render_rays(self, state: Encoded, origins: torch.Tensor, dirs: torch.Tensor,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Rays ``[B, N, 3]`` of the ``B`` encoded objects -> ``rgb [B, N, 3]`` (the fine pass
        when there is one) and, with a separate fine network, ``rgb_coarse [B, N, 3]``."""
        B, N = origins.shape[:2]
        coarse, fine = self.fields(state)
        out = self.renderer(coarse, origins.reshape(-1, 3), dirs.reshape(-1, 3),
                            fine_field=fine, generator=generator)
        res = {"rgb": out["rgb"].reshape(B, N, 3)}
        if "coarse" in out:
            res["rgb_coarse"] = out["coarse"]["rgb"].reshape(B, N, 3)
        return res

    def forward(self, images: torch.Tensor, w2c: torch.Tensor, intrinsics: torch.Tensor,
                origins: torch.Tensor, dirs: torch.Tensor, target: torch.Tensor,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Training losses (called through the trainer's (DDP) wrapper): one input view per
        object ``images [B, H, W, 3]``, ``w2c [B, 4, 4]``, ``intrinsics [B, 4]``; rays and
        their colours ``[B, N, 3]`` -> ``mse`` (fine pass) and ``mse_coarse`` (with a separate
        fine network)."""
        state = self.encode(images[:, None], w2c[:, None], intrinsics[:, None])
        out = self.render_rays(state, origins, dirs, generator)
        losses = {"mse": (out["rgb"] - target).pow(2).mean()}
        if "rgb_coarse" in out:
            losses["mse_coarse"] = (out["rgb_coarse"] - target).pow(2).mean()
        return losses
