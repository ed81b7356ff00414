"""ADM-style U-Net denoiser (Ho et al. 2020; Dhariwal & Nichol 2021).

``UNet(...)(x [B,C,H,W], t [B], y=None, cond=None) -> [B, out_channels, H, W]``

- ResNet blocks with GroupNorm/SiLU, timestep embedding added per block (scale-shift norm),
  self-attention at the resolutions listed in ``attention_resolutions`` (in pixels of the input).
- ``t`` is continuous in ``[0, 1]`` and embedded as sinusoids of ``1000 t``.
- ``num_classes > 0`` adds a label embedding with one extra row, the **null label**
  ``num_classes`` (``model.null_label``), used for classifier-free guidance; training drops labels
  to it with :func:`drop_labels`. ``y=None`` means the null label.
- ``cond_channels > 0``: image conditioning by channel concatenation (``cond [B,cond_ch,H,W]``,
  NerfDiff conditions on the NeRF rendering this way); ``cond=None`` feeds zeros (the
  "unconditional" branch for CFG on the image).
- The output convolution and each block's last convolution are zero-initialised, so a new
  network predicts 0 and each ResNet block starts as the identity.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0,
                       scale: float = 1000.0) -> torch.Tensor:
    """Sinusoidal embedding ``[B, dim]`` of ``scale * t``."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device,
                                                           dtype=torch.float32) / half)
    args = (scale * t.float())[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], -1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def drop_labels(y: torch.Tensor, p: float, null_label: int,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Replace each label by ``null_label`` with probability ``p`` (CFG training)."""
    if p <= 0:
        return y
    drop = torch.rand(y.shape, generator=generator).to(y.device) < p
    return torch.where(drop, torch.full_like(y, null_label), y)


def norm(ch: int) -> nn.GroupNorm:
    groups = 32
    while ch % groups:
        groups //= 2
    return nn.GroupNorm(groups, ch)


def zero_module(m: nn.Module) -> nn.Module:
    for p in m.parameters():
        nn.init.zeros_(p)
    return m


class ResBlock(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, emb_dim: int, dropout: float = 0.0):
        super().__init__()
        self.norm1, self.conv1 = norm(in_ch), nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.emb = nn.Linear(emb_dim, 2 * out_ch)
        self.norm2 = norm(out_ch)
        self.drop = nn.Dropout(dropout)
        self.conv2 = zero_module(nn.Conv2d(out_ch, out_ch, 3, padding=1))
        self.skip = nn.Conv2d(in_ch, out_ch, 1) if in_ch != out_ch else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(F.silu(emb))[:, :, None, None].chunk(2, 1)
        h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(self.drop(F.silu(h)))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    def __init__(self, ch: int, heads: int = 4):
        super().__init__()
        while ch % heads:
            heads //= 2
        self.heads = heads
        self.norm = norm(ch)
        self.qkv = nn.Conv2d(ch, 3 * ch, 1)
        self.proj = zero_module(nn.Conv2d(ch, ch, 1))

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        b, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(b, 3, self.heads, c // self.heads, h * w) \
            .permute(1, 0, 2, 4, 3).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)  # [b, heads, hw, c/heads]
        out = out.permute(0, 1, 3, 2).reshape(b, c, h, w)
        return x + self.proj(out)


class Downsample(nn.Module):
    def __init__(self, ch: int, out_ch: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(ch, out_ch or ch, 3, stride=2, padding=1)

    def forward(self, x, emb=None):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, ch: int, out_ch: int | None = None):
        super().__init__()
        self.conv = nn.Conv2d(ch, out_ch or ch, 3, padding=1)

    def forward(self, x, emb=None):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class TimestepBlockSeq(nn.ModuleList):
    def forward(self, x, emb):
        for m in self:
            x = m(x, emb)
        return x


class CondEmbedding(nn.Module):
    """Time (+ optional class label with a null row) -> embedding ``[B, emb_dim]``."""

    def __init__(self, base_ch: int, emb_dim: int, num_classes: int = 0):
        super().__init__()
        self.base_ch = base_ch
        self.time = nn.Sequential(nn.Linear(base_ch, emb_dim), nn.SiLU(),
                                  nn.Linear(emb_dim, emb_dim))
        self.num_classes = num_classes
        self.label = nn.Embedding(num_classes + 1, emb_dim) if num_classes else None

    def forward(self, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        first = self.time[0].weight
        emb = self.time(timestep_embedding(t, self.base_ch).to(first.dtype))
        if self.label is not None:
            if y is None:
                y = torch.full((t.shape[0],), self.num_classes, dtype=torch.long,
                               device=t.device)
            emb = emb + self.label(y.long())
        return emb


class UNet(nn.Module):
    def __init__(self, in_channels: int = 3, out_channels: int | None = None,
                 channels: int = 64, channel_mult: Sequence[int] = (1, 2, 2),
                 num_res_blocks: int = 2, attention_resolutions: Sequence[int] = (16,),
                 resolution: int = 32, dropout: float = 0.0, num_classes: int = 0,
                 cond_channels: int = 0, heads: int = 4):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels or in_channels
        self.num_classes, self.cond_channels = num_classes, cond_channels
        self.null_label = num_classes
        self.resolution = resolution
        emb_dim = 4 * channels
        self.embed = CondEmbedding(channels, emb_dim, num_classes)
        self.in_conv = nn.Conv2d(in_channels + cond_channels, channels, 3, padding=1)
        self.down = nn.ModuleList()
        skips = [channels]
        ch, res = channels, resolution
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                blocks = [ResBlock(ch, channels * mult, emb_dim, dropout)]
                ch = channels * mult
                if res in attention_resolutions:
                    blocks.append(AttnBlock(ch, heads))
                self.down.append(TimestepBlockSeq(blocks))
                skips.append(ch)
            if level != len(channel_mult) - 1:
                self.down.append(TimestepBlockSeq([Downsample(ch)]))
                skips.append(ch)
                res //= 2
        self.mid = TimestepBlockSeq([ResBlock(ch, ch, emb_dim, dropout), AttnBlock(ch, heads),
                                     ResBlock(ch, ch, emb_dim, dropout)])
        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(channel_mult))):
            for i in range(num_res_blocks + 1):
                blocks = [ResBlock(ch + skips.pop(), channels * mult, emb_dim, dropout)]
                ch = channels * mult
                if res in attention_resolutions:
                    blocks.append(AttnBlock(ch, heads))
                if level and i == num_res_blocks:
                    blocks.append(Upsample(ch))
                    res *= 2
                self.up.append(TimestepBlockSeq(blocks))
        self.feature_channels = ch
        self.out = nn.Sequential(norm(ch), nn.SiLU(),
                                 zero_module(nn.Conv2d(ch, self.out_channels, 3, padding=1)))
        self.downsample_factor = 2 ** (len(channel_mult) - 1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        if y is not None and not self.num_classes:
            raise ValueError("this UNet was built without num_classes")
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        return self.out(self.features(x, self.embed(t, y), cond=cond))

    def features(self, x: torch.Tensor, emb: torch.Tensor, cond: torch.Tensor | None = None,
                 add: torch.Tensor | None = None) -> torch.Tensor:
        """Last feature map before the output head; ``add`` is added after the input conv (the
        hook Matryoshka Diffusion uses to feed the outer encoder's features in)."""
        if x.shape[-1] % self.downsample_factor or x.shape[-2] % self.downsample_factor:
            raise ValueError(f"input size {tuple(x.shape[-2:])} must be divisible by "
                             f"{self.downsample_factor}")
        if self.cond_channels:
            if cond is None:
                cond = x.new_zeros(x.shape[0], self.cond_channels, *x.shape[2:])
            x = torch.cat([x, cond.to(x)], 1)
        elif cond is not None:
            raise ValueError("this UNet was built without cond_channels")
        h = self.in_conv(x)
        if add is not None:
            h = h + add
        hs = [h]
        for block in self.down:
            h = block(h, emb)
            hs.append(h)
        h = self.mid(h, emb)
        for block in self.up:
            h = block(torch.cat([h, hs.pop()], 1), emb)
        return h
