"""Diffusion Transformer with adaLN-Zero blocks (Peebles & Xie 2023).

``DiT(...)(x [B,C,H,W], t [B], y=None) -> [B, out_channels, H, W]``: patchify (a strided conv),
fixed 2-D sin-cos position embedding, ``depth`` transformer blocks whose LayerNorm scale/shift and
residual gates come from the (time + label) embedding, and a final adaLN layer + linear
unpatchify. The modulation layers and the final linear are zero-initialised (adaLN-Zero): at
init every block is the identity and the output is exactly zero.
Labels work as in :class:`~neural3d.diffusion.unet.UNet` (null label ``num_classes``).
"""

from __future__ import annotations

import torch
from torch import nn

from neural3d.diffusion.unet import CondEmbedding


def sincos_2d(dim: int, gh: int, gw: int) -> torch.Tensor:
    """Fixed 2-D sin-cos position embedding ``[gh*gw, dim]`` (MAE/DiT)."""
    def one(d, pos):
        omega = 1.0 / 10000 ** (torch.arange(d // 2, dtype=torch.float64) / (d / 2))
        out = pos.reshape(-1, 1).double() * omega[None]
        return torch.cat([torch.sin(out), torch.cos(out)], 1)
    yy, xx = torch.meshgrid(torch.arange(gh), torch.arange(gw), indexing="ij")
    return torch.cat([one(dim // 2, yy), one(dim // 2, xx)], 1).float()


def modulate(x, shift, scale):
    return x * (1 + scale[:, None]) + shift[:, None]


class DiTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(approximate="tanh"),
                                 nn.Linear(hidden, dim))
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 6 * dim))
        nn.init.zeros_(self.ada[1].weight)
        nn.init.zeros_(self.ada[1].bias)

    def forward(self, x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        s1, sc1, g1, s2, sc2, g2 = self.ada(c).chunk(6, 1)
        h = modulate(self.norm1(x), s1, sc1)
        x = x + g1[:, None] * self.attn(h, h, h, need_weights=False)[0]
        x = x + g2[:, None] * self.mlp(modulate(self.norm2(x), s2, sc2))
        return x


class DiT(nn.Module):
    def __init__(self, in_channels: int = 3, out_channels: int | None = None,
                 resolution: int = 32, patch: int = 2, dim: int = 256, depth: int = 6,
                 heads: int = 4, mlp_ratio: float = 4.0, num_classes: int = 0):
        super().__init__()
        if resolution % patch:
            raise ValueError("resolution must be divisible by patch")
        self.in_channels, self.out_channels = in_channels, out_channels or in_channels
        self.patch, self.resolution, self.num_classes = patch, resolution, num_classes
        self.null_label = num_classes
        self.embed_x = nn.Conv2d(in_channels, dim, patch, stride=patch)
        g = resolution // patch
        self.register_buffer("pos", sincos_2d(dim, g, g)[None], persistent=False)
        self.embed = CondEmbedding(dim, dim, num_classes)
        self.blocks = nn.ModuleList(DiTBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.final = nn.Linear(dim, patch * patch * self.out_channels)
        for m in (self.ada[1], self.final):
            nn.init.zeros_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                cond: torch.Tensor | None = None) -> torch.Tensor:
        if cond is not None:
            raise ValueError("DiT takes no image conditioning")
        if y is not None and not self.num_classes:
            raise ValueError("this DiT was built without num_classes")
        b, _, h, w = x.shape
        if (h, w) != (self.resolution, self.resolution):
            raise ValueError(f"DiT was built for {self.resolution}x{self.resolution}, "
                             f"got {h}x{w}")
        if t.ndim == 0:
            t = t.expand(b)
        tokens = self.embed_x(x).flatten(2).transpose(1, 2) + self.pos
        c = self.embed(t, y)
        for blk in self.blocks:
            tokens = blk(tokens, c)
        shift, scale = self.ada(c).chunk(2, 1)
        out = self.final(modulate(self.norm(tokens), shift, scale))  # [B, N, p*p*C]
        p, g = self.patch, h // self.patch
        out = out.reshape(b, g, g, p, p, self.out_channels).permute(0, 5, 1, 3, 2, 4)
        return out.reshape(b, self.out_channels, h, w)
