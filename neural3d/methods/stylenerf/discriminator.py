"""StyleGAN2's discriminator (skip architecture, minibatch standard deviation), grown
progressively with its generator."""

from __future__ import annotations

import math

import torch
from torch import nn

from neural3d.methods.stylenerf.config import DiscriminatorConfig
from neural3d.methods.stylenerf.layers import FC, Conv2d, downsample2x


def minibatch_std(x: torch.Tensor, group: int) -> torch.Tensor:
    """Append the standard deviation over groups of ``group`` samples (one channel, averaged
    over features and pixels): ``[B, C, H, W] -> [B, C + 1, H, W]`` (StyleGAN2)."""
    B, C, H, W = x.shape
    G = min(group, B)
    y = x.reshape(G, -1, C, H, W)
    y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt()      # [B/G, C, H, W]
    y = y.mean([1, 2, 3]).reshape(-1, 1, 1, 1).repeat(G, 1, H, W)
    return torch.cat([x, y], 1)


class DBlock(nn.Module):
    """Two 3x3 convolutions (lrelu), the second one downsampling (blur [1,3,3,1], stride 2)."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv0 = Conv2d(cin, cin)
        self.conv1 = Conv2d(cin, cout, down=2)

    def forward(self, x):
        return self.conv1(self.conv0(x))


class Discriminator(nn.Module):
    """``D(img [B, in_channels, R, R], res=R, alpha=1) -> logits [B]``.

    Skip architecture: a FromRGB (1x1) at every resolution adds the downsampled image to the
    features before each block; blocks halve the resolution down to 4x4, then minibatch std,
    a 3x3 convolution and two FC layers. Progressive growing: an image at ``res`` below
    ``max_res`` enters at that resolution's block; ``alpha < 1`` fades that first block in (at
    ``alpha = 0`` D is exactly the one of the resolution below, on the downsampled image).
    Channels at resolution ``r``: ``min(channel_base // r, channel_max)``."""

    def __init__(self, cfg: DiscriminatorConfig, max_res: int, in_channels: int = 3):
        super().__init__()
        self.max_res, self.group = max_res, cfg.mbstd_group
        n = int(math.log2(max_res)) - 2
        if 4 * 2 ** n != max_res:
            raise ValueError(f"discriminator resolution must be a power of two >= 4, got "
                             f"{max_res}")

        def ch(r):
            return max(min(cfg.channel_base // r, cfg.channel_max), 1)

        self.res = [max_res >> i for i in range(n)]              # block input resolutions
        self.fromrgb = nn.ModuleList(Conv2d(in_channels, ch(r), kernel=1) for r in self.res)
        self.blocks = nn.ModuleList(DBlock(ch(r), ch(r // 2)) for r in self.res)
        self.fromrgb4 = Conv2d(in_channels, ch(4), kernel=1)
        c = ch(4)
        self.conv = Conv2d(c + 1, c)
        self.fc = FC(c * 16, c, "lrelu")
        self.out = FC(c, 1)

    def forward(self, img: torch.Tensor, res: int | None = None, alpha: float = 1.0
                ) -> torch.Tensor:
        res = img.shape[-1] if res is None else res
        if img.shape[-1] != res or res not in self.res + [4]:
            raise ValueError(f"D: image of {img.shape[-1]} px at res {res} (resolutions: "
                             f"{self.res + [4]})")
        first = self.res.index(res) if res != 4 else len(self.res)
        x = None
        for i in range(first, len(self.res)):
            y = self.fromrgb[i](img)
            x = y if x is None else x + y
            x = self.blocks[i](x)
            if i == first and alpha < 1.0:
                x = x * alpha
            img = downsample2x(img)
        y = self.fromrgb4(img)
        x = y if x is None else x + y
        x = self.conv(minibatch_std(x, self.group))
        return self.out(self.fc(x.flatten(1)))[:, 0]
