"""EG3D's generator on the same parts: a StyleGAN2-lite backbone emitting three feature planes,
the small decoder, low-resolution neural rendering through ``VolumeRenderer`` and 2D
super-resolution (the raw render is the first skip image; D sees both, dual discrimination)."""

from __future__ import annotations

from itertools import pairwise

import torch
from torch import nn

from neural3d.fields.base import density_activation, normalize_aabb, widened_sigmoid
from neural3d.fields.triplane import sample_triplane
from neural3d.methods.stylenerf.config import EG3DGeneratorConfig
from neural3d.methods.stylenerf.layers import FC, StyleLayer, upsample2x
from neural3d.methods.stylenerf.render import (
    image_rays,
    make_renderer,
    pixel_rays,
    render_batched,
)


class SynthesisBlock(nn.Module):
    """StyleGAN2 skip block: (2x upsampling), two modulated 3x3 convolutions, a modulated 1x1
    ToRGB-like output (``out_channels``) added to the upsampled skip output."""

    def __init__(self, cin: int, cout: int, out_channels: int, w_dim: int, up: bool):
        super().__init__()
        self.up = up
        self.conv0 = StyleLayer(cin, cout, w_dim, kernel=3)
        self.conv1 = StyleLayer(cout, cout, w_dim, kernel=3)
        self.torgb = StyleLayer(cout, out_channels, w_dim, demodulate=False,
                                activation="linear")

    def forward(self, x, skip, w0, w1):
        if self.up:
            x = upsample2x(x)
            skip = upsample2x(skip) if skip is not None else None
        x = self.conv1(self.conv0(x, w0), w1)
        y = self.torgb(x, w1)
        return x, y if skip is None else skip + y


class TriplaneBackbone(nn.Module):
    """A learned 4x4 constant grown by :class:`SynthesisBlock` s to ``plane_res``; emits
    ``3 * C`` channels, reshaped to planes ``[B, 3, C, R, R]`` (xy, xz, yz). Uses ``2`` ws per
    block."""

    def __init__(self, cfg: EG3DGeneratorConfig, w_dim: int):
        super().__init__()
        n = cfg.plane_res.bit_length() - 2          # blocks at 4, 8, ..., plane_res
        if 4 * 2 ** (n - 1) != cfg.plane_res:
            raise ValueError(f"generator.plane_res must be a power of two >= 4, got "
                             f"{cfg.plane_res}")
        c = cfg.backbone_channels
        self.const = nn.Parameter(torch.randn(c, 4, 4))
        self.blocks = nn.ModuleList(SynthesisBlock(c, c, 3 * cfg.plane_channels, w_dim, i > 0)
                                    for i in range(n))
        self.C, self.num_ws = cfg.plane_channels, 2 * n

    def forward(self, ws):
        x, planes = self.const[None].expand(len(ws), -1, -1, -1), None
        for i, blk in enumerate(self.blocks):
            x, planes = blk(x, planes, ws[:, 2 * i], ws[:, 2 * i + 1])
        R = planes.shape[-1]
        return planes.reshape(len(ws), 3, self.C, R, R)


class TriplaneDecoder(nn.Module):
    """EG3D's OSGDecoder: plane features *averaged* over the three planes -> FC(hidden),
    softplus -> FC(1 + F); density ``softplus(sigma - 1)``, features a widened sigmoid (the first
    three are the raw RGB). ``forward(planes, points [B, M, 3] in the box)``."""

    def __init__(self, cfg: EG3DGeneratorConfig):
        super().__init__()
        self.fc0 = FC(cfg.plane_channels, cfg.decoder_hidden, lr_mul=cfg.decoder_lr_mul)
        self.fc1 = FC(cfg.decoder_hidden, 1 + cfg.features, lr_mul=cfg.decoder_lr_mul)
        self.register_buffer("aabb", torch.as_tensor(cfg.aabb, dtype=torch.float32),
                             persistent=False)

    def forward(self, planes, points):
        xn = normalize_aabb(points, self.aabb)       # the box warp: the box -> [-1, 1]^3
        h = self.fc1(nn.functional.softplus(self.fc0(sample_triplane(planes, xn, "mean"))))
        density = density_activation(h[..., 0], "softplus")
        density = torch.where((xn.abs() <= 1).all(-1), density, torch.zeros_like(density))
        return density, widened_sigmoid(h[..., 1:])


class EG3DSynthesis(nn.Module):
    """ws -> planes -> features rendered at ``render_res`` -> super-resolution to
    ``output_res`` (``levels`` blocks of modulated 3x3 convolutions, all on the last w, as EG3D).
    Same outputs as :class:`~neural3d.methods.stylenerf.nerf.StyleNeRFSynthesis`."""

    def __init__(self, cfg: EG3DGeneratorConfig, w_dim: int):
        super().__init__()
        self.cfg = cfg
        self.backbone = TriplaneBackbone(cfg, w_dim)
        self.decoder = TriplaneDecoder(cfg)
        self.renderer = make_renderer(cfg.n_samples, cfg.n_importance, cfg.aabb)
        chans = [cfg.features] + [cfg.sr_channels] * cfg.levels
        self.sr = nn.ModuleList(SynthesisBlock(a, b, 3, w_dim, True)
                                for a, b in pairwise(chans))
        # EG3D white_back: 1 - total weight added to every rendered channel
        self.register_buffer("background", torch.full((cfg.features,), cfg.background),
                             persistent=False)
        self.num_ws = self.backbone.num_ws + 1

    def point_field(self, ws):
        """The triplanes of one sample ``ws [1, num_ws, w_dim]`` through the decoder, as a
        function of world points ``[N, 3]`` -> ``(density [N], raw rgb [N, 3])``."""
        planes = self.backbone(ws)

        def fn(points):
            density, f = self.decoder(planes, points[None])
            return density[0], f[0, :, :3]

        return fn

    def forward(self, ws, cams, level: int | None = None, alpha: float = 1.0,
                generator=None) -> dict:
        r = self.cfg.render_res
        planes = self.backbone(ws)
        o, d = image_rays(cams, r, ws.device)
        out = render_batched(self.renderer, lambda p: self.decoder(planes, p), o, d,
                             self.background, generator)
        x = out["features"].permute(0, 2, 1).reshape(len(o), -1, r, r)
        raw = x[:, :3]
        img, w = raw, ws[:, -1]
        for blk in self.sr:
            x, img = blk(x, img, w, w)
        return {"image": img, "raw": raw, "depth": out["depth"].reshape(len(o), 1, r, r)}

    def nerf_path(self, ws, cams, level: int | None, alpha: float, px, py, generator=None):
        """The raw RGB (the decoder's first three features) rendered at the integer pixels
        ``px, py [B, N]`` of the output image: what super-resolution should agree with.
        ``[B, N, 3]``."""
        planes = self.backbone(ws)
        o, d = pixel_rays(cams, self.cfg.output_res, px, py, ws.device)

        def rgb(points):
            density, f = self.decoder(planes, points)
            return density, f[..., :3]

        return render_batched(self.renderer, rgb, o, d, self.background[:3],
                              generator)["features"]
