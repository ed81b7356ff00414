"""StyleNeRF's generator: a style-modulated NeRF rendered to features at low resolution, and a
StyleGAN2 skip upsampler made of 1x1 modulated convolutions only, with the NeRF-path
regulariser that ties the two together."""

from __future__ import annotations

from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

from neural3d.fields.base import density_activation, normalize_aabb
from neural3d.fields.encodings import PositionalEncoding
from neural3d.methods.stylenerf.config import StyleNeRFGeneratorConfig
from neural3d.methods.stylenerf.layers import FC, StyleLayer, upsample2x
from neural3d.methods.stylenerf.render import (
    image_rays,
    make_renderer,
    pixel_rays,
    render_batched,
)


class StyleNeRFField(nn.Module):
    """Positional encoding of the point (no view direction) -> ``layers`` modulated 1x1 layers
    (lrelu, demodulated, each with its own w) -> heads: density (unmodulated FC,
    ``softplus(x - 1)``), a feature vector (modulated, linear) and RGB (a modulated 1x1 ToRGB
    of the features, no demodulation). Density is 0 outside ``aabb``.

    ``forward(points [B, M, 3], ws [B, num_ws, w_dim]) -> (density [B, M], [B, M, F + 3])``
    (features, then RGB)."""

    def __init__(self, w_dim: int, hidden: int, layers: int, n_freqs: int, features: int,
                 aabb):
        super().__init__()
        self.pe = PositionalEncoding(3, n_freqs)
        dims = [self.pe.out_dim] + [hidden] * layers
        self.layers = nn.ModuleList(StyleLayer(a, b, w_dim) for a, b in pairwise(dims))
        self.sigma = FC(hidden, 1)
        self.feat = StyleLayer(hidden, features, w_dim, activation="linear")
        self.rgb = StyleLayer(features, 3, w_dim, demodulate=False, activation="linear")
        self.register_buffer("aabb", torch.as_tensor(aabb, dtype=torch.float32),
                             persistent=False)
        self.num_ws = layers + 2

    def forward(self, points: torch.Tensor, ws: torch.Tensor):
        xn = normalize_aabb(points, self.aabb)
        h = self.pe(xn)
        for i, layer in enumerate(self.layers):
            h = layer(h, ws[:, i])
        density = density_activation(self.sigma(h)[..., 0], "softplus")
        density = torch.where((xn.abs() <= 1).all(-1), density, torch.zeros_like(density))
        f = self.feat(h, ws[:, -2])
        return density, torch.cat([f, self.rgb(f, ws[:, -1])], -1)


class UpBlock(nn.Module):
    """One 2x level of the upsampler: learned upsampling (the [1,3,3,1]-filtered 2x of the
    features plus a pixel shuffle of a small 1x1 adapter, StyleNeRF's ``pixelshuffle`` mode),
    two modulated 1x1 layers and a ToRGB added to the upsampled skip image."""

    def __init__(self, cin: int, cout: int, w_dim: int):
        super().__init__()
        self.adapter = nn.Sequential(FC(cin, max(cin // 4, 1), "lrelu"), FC(max(cin // 4, 1),
                                                                            4 * cin))
        self.conv0 = StyleLayer(cin, cout, w_dim)
        self.conv1 = StyleLayer(cout, cout, w_dim)
        self.torgb = StyleLayer(cout, 3, w_dim, demodulate=False, activation="linear")

    def forward(self, x, img, w0, w1):
        """Images: ``x [B, C, H, W]``, ``img [B, 3, H, W]`` -> both at ``2H x 2W``."""
        a = self.adapter(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        x = upsample2x(x) + F.pixel_shuffle(a, 2)
        x = self.conv1(self.conv0(x, w0), w1)
        return x, upsample2x(img) + self.torgb(x, w1)

    def pixel(self, x, img, sub, w0, w1):
        """The same block for points ``x [B, M, C]`` (``img [B, M, 3]``) that sit at sub-pixel
        ``sub [B, M]`` (``2 * row + col`` within their 2x2 cell) of the upsampled map: the
        upsampling filter acts as the identity on a single point (as in StyleNeRF)."""
        B, M, C = x.shape
        a = self.adapter(x).reshape(B, M, C, 4)
        x = x + a.gather(-1, sub[:, :, None, None].expand(B, M, C, 1))[..., 0]
        x = self.conv1(self.conv0(x, w0), w1)
        return x, img + self.torgb(x, w1)


class StyleNeRFSynthesis(nn.Module):
    """ws -> images. ``forward(ws, cams, level, alpha, generator)`` renders the NeRF's features
    and RGB at ``render_res`` (stratified + importance samples through ``VolumeRenderer``), then
    runs ``level`` upsampler blocks (the NeRF's RGB is the first skip image), fading the last
    one in with ``alpha``. ``upsampler: bilinear`` (NeRF-only) bilinearly resizes the NeRF's RGB.

    Returns ``image [B, 3, R, R]`` (``R = render_res * 2**level``), ``raw [B, 3, r, r]`` (the
    NeRF's RGB) and ``depth [B, 1, r, r]``; images are in [0, 1] on the white background (not
    clamped while training)."""

    def __init__(self, cfg: StyleNeRFGeneratorConfig, w_dim: int):
        super().__init__()
        self.cfg = cfg
        self.nerf = StyleNeRFField(w_dim, cfg.nerf_hidden, cfg.nerf_layers, cfg.n_freqs,
                                   cfg.features, cfg.aabb)
        chans = [cfg.features] + list(cfg.channels[:cfg.levels])
        self.blocks = nn.ModuleList(UpBlock(a, b, w_dim) for a, b in pairwise(chans)) \
            if cfg.upsampler == "learned" else nn.ModuleList()
        self.renderer = make_renderer(cfg.n_samples, cfg.n_importance, cfg.aabb)
        bg = torch.cat([torch.zeros(cfg.features), torch.full((3,), cfg.background)])
        self.register_buffer("background", bg, persistent=False)
        self.num_ws = self.nerf.num_ws + 2 * len(self.blocks)

    def point_field(self, ws):
        """The NeRF of one sample ``ws [1, num_ws, w_dim]`` as a function of world points
        ``[N, 3]`` -> ``(density [N], rgb [N, 3])`` (its own RGB, before the upsampler)."""
        def fn(points):
            density, f = self.nerf(points[None], ws)
            return density[0], f[0, :, -3:]

        return fn

    def _block_ws(self, ws, k):
        n = self.nerf.num_ws + 2 * k
        return ws[:, n], ws[:, n + 1]

    def render_nerf(self, ws, cams, generator=None):
        """``(features [B, F, r, r], rgb [B, 3, r, r], depth [B, 1, r, r])``."""
        r = self.cfg.render_res
        o, d = image_rays(cams, r, ws.device)
        out = render_batched(self.renderer, lambda p: self.nerf(p, ws), o, d, self.background,
                             generator)
        f = out["features"].permute(0, 2, 1).reshape(len(o), -1, r, r)
        return f[:, :-3], f[:, -3:], out["depth"].reshape(len(o), 1, r, r)

    def forward(self, ws, cams, level: int, alpha: float = 1.0, generator=None) -> dict:
        x, raw, depth = self.render_nerf(ws, cams, generator)
        res = self.cfg.render_res * 2 ** level
        if not len(self.blocks):
            img = F.interpolate(raw, size=(res, res), mode="bilinear", align_corners=False) \
                if res != raw.shape[-1] else raw
            return {"image": img, "raw": raw, "depth": depth}
        imgs, img = [raw], raw
        for k in range(level):
            x, img = self.blocks[k](x, img, *self._block_ws(ws, k))
            imgs.append(img)
        if level > 0 and alpha < 1.0:
            img = torch.lerp(upsample2x(imgs[-2]), imgs[-1], alpha)
        return {"image": img, "raw": raw, "depth": depth}

    def nerf_path(self, ws, cams, level: int, alpha: float, px, py, generator=None):
        """The NeRF path at integer pixels ``px, py [B, N]`` of the ``R = render_res * 2**level``
        image: each ray is rendered by the NeRF at its high-resolution position, every *sample's*
        features go through the same 1x1 upsampler layers (the sub-pixel of each level taken from
        the pixel's coordinates), and the resulting colours are composited. ``[B, N, 3]``.
        Without learned blocks (NeRF-only) it is the NeRF's RGB rendered at those pixels."""
        res = self.cfg.render_res * 2 ** level
        o, d = pixel_rays(cams, res, px, py, ws.device)
        B, N = px.shape
        # sub-pixel index of the pixel within its 2x2 cell at the output of block k
        shifts = [level - 1 - k for k in range(level)]
        subs = [(((py >> s) & 1) * 2 + ((px >> s) & 1)).to(ws.device) for s in shifts]

        def batched(points):
            density, f = self.nerf(points, ws)
            S = points.shape[1] // N
            x, img = f[..., :-3], f[..., -3:]
            imgs = [img]
            for k in range(level if len(self.blocks) else 0):
                sub = subs[k][:, :, None].expand(B, N, S).reshape(B, N * S)
                x, img = self.blocks[k].pixel(x, img, sub, *self._block_ws(ws, k))
                imgs.append(img)
            if len(imgs) > 1 and alpha < 1.0:
                img = torch.lerp(imgs[-2], imgs[-1], alpha)
            return density, img

        bg = self.background[-3:]
        return render_batched(self.renderer, batched, o, d, bg, generator)["features"]
