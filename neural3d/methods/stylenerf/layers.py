"""StyleGAN2 building blocks shared by the StyleNeRF and EG3D-style generators and the
discriminator: equalised-lr layers, the mapping network, modulated convolutions, resampling.

Equalised learning rate (Karras et al.): a parameter is stored as ``N(0, 1) / lr_mul`` and scaled
by ``lr_mul / sqrt(fan_in)`` at run time, so Adam's step is the same for every layer and a layer
with ``lr_mul = 0.01`` (the mapping network) learns 100x slower.
"""

from __future__ import annotations

import math
from itertools import pairwise

import torch
import torch.nn.functional as F
from torch import nn

SQRT2 = math.sqrt(2.0)


def act(x: torch.Tensor, kind: str) -> torch.Tensor:
    """``lrelu`` (slope 0.2, gain sqrt 2, StyleGAN2's bias_act) or ``linear``."""
    if kind == "lrelu":
        return F.leaky_relu(x, 0.2) * SQRT2
    if kind == "linear":
        return x
    raise ValueError(f"unknown activation {kind!r} (lrelu, linear)")


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    """``x / sqrt(mean(x^2))`` along ``dim`` (the mapping network's input normalisation)."""
    return x * (x.square().mean(dim, keepdim=True) + eps).rsqrt()


class FC(nn.Module):
    """Equalised-lr fully connected layer on the last dimension: ``[..., I] -> [..., O]``."""

    def __init__(self, in_features: int, out_features: int, activation: str = "linear",
                 lr_mul: float = 1.0, bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_features, in_features) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_features,), float(bias_init) / lr_mul))
        self.wgain, self.bgain, self.activation = lr_mul / math.sqrt(in_features), lr_mul, \
            activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return act(F.linear(x, self.weight * self.wgain, self.bias * self.bgain), self.activation)


class MappingNetwork(nn.Module):
    """``z [B, z_dim]`` -> ``ws [B, num_ws, w_dim]``: z normalised by its second moment, ``layers``
    FC layers (lrelu, ``lr_mul``), broadcast to ``num_ws``. ``w_avg`` (a buffer) tracks the mean w
    with ``w_avg_beta`` while training (``update_avg=True``); ``psi < 1`` truncates towards it."""

    def __init__(self, z_dim: int, w_dim: int, num_ws: int, layers: int = 8,
                 lr_mul: float = 0.01, w_avg_beta: float = 0.995):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.w_avg_beta = z_dim, w_dim, num_ws, w_avg_beta
        dims = [z_dim] + [w_dim] * layers
        self.net = nn.Sequential(*[FC(a, b, "lrelu", lr_mul) for a, b in pairwise(dims)])
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: torch.Tensor, psi: float = 1.0, update_avg: bool = False
                ) -> torch.Tensor:
        w = self.net(normalize_2nd_moment(z))
        if update_avg:
            self.w_avg.copy_(w.detach().mean(0).lerp(self.w_avg, self.w_avg_beta))
        ws = w[:, None].expand(-1, self.num_ws, -1)
        if psi != 1.0:
            ws = self.w_avg.lerp(ws, psi)
        return ws


def modulated_conv2d(x: torch.Tensor, weight: torch.Tensor, styles: torch.Tensor,
                     demodulate: bool = True, padding: int = 0) -> torch.Tensor:
    """StyleGAN2's modulated convolution as one grouped convolution: per sample ``b`` the weight
    ``w'[o, i] = weight[o, i] * styles[b, i]``, demodulated to unit norm per output channel
    (``w'' = w' / sqrt(sum_{i,k} w'^2 + 1e-8)``) when ``demodulate``.

    ``x [B, I, H, W]``, ``weight [O, I, k, k]``, ``styles [B, I]`` -> ``[B, O, H', W']``."""
    B, I, H, W = x.shape
    O, _, kh, kw = weight.shape
    w = weight[None] * styles[:, None, :, None, None]                    # [B, O, I, k, k]
    if demodulate:
        w = w * (w.square().sum([2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    out = F.conv2d(x.reshape(1, B * I, H, W), w.reshape(B * O, I, kh, kw), padding=padding,
                   groups=B)
    return out.reshape(B, O, *out.shape[2:])


class StyleLayer(nn.Module):
    """A modulated convolution (kernel ``k``), bias and activation; its style is an affine map
    of a w (bias 1). Takes images ``[B, I, H, W]`` or, for ``k == 1``, point sets ``[B, N, I]``
    (the same per-pixel map: ``((x * s) @ W^T) * d``), so a 1x1 layer can run on a NeRF's
    samples exactly as on a feature map."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, kernel: int = 1,
                 demodulate: bool = True, activation: str = "lrelu"):
        super().__init__()
        self.affine = FC(w_dim, in_channels, bias_init=1.0)
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.kernel, self.demodulate, self.activation = kernel, demodulate, activation
        self.wgain = 1.0 / math.sqrt(in_channels * kernel * kernel)

    def forward(self, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        styles = self.affine(w)                                          # [B, I]
        weight = self.weight * self.wgain
        if x.dim() == 4:
            y = modulated_conv2d(x, weight, styles, self.demodulate, self.kernel // 2)
            return act(y + self.bias[None, :, None, None], self.activation)
        if self.kernel != 1 or x.dim() != 3:
            raise ValueError(f"StyleLayer: point input [B, N, C] needs kernel 1, got "
                             f"{tuple(x.shape)} with kernel {self.kernel}")
        w2 = weight[:, :, 0, 0]                                          # [O, I]
        y = (x * styles[:, None, :]) @ w2.t()
        if self.demodulate:
            d = ((w2[None] * styles[:, None, :]).square().sum(-1) + 1e-8).rsqrt()  # [B, O]
            y = y * d[:, None, :]
        return act(y + self.bias, self.activation)


class Conv2d(nn.Module):
    """Equalised-lr convolution (no modulation), bias, activation; ``down=2`` blurs with
    [1,3,3,1] and strides (the discriminator's downsampling conv)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int = 3,
                 activation: str = "lrelu", down: int = 1):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(out_channels, in_channels, kernel, kernel))
        self.bias = nn.Parameter(torch.zeros(out_channels))
        self.wgain = 1.0 / math.sqrt(in_channels * kernel * kernel)
        self.kernel, self.activation, self.down = kernel, activation, down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down == 2:
            x = downsample2x(x)
        y = F.conv2d(x, self.weight * self.wgain, self.bias, padding=self.kernel // 2)
        return act(y, self.activation)


def _blur_kernel(device, dtype) -> torch.Tensor:
    f = torch.tensor([1.0, 3.0, 3.0, 1.0], device=device, dtype=dtype)
    f = f[:, None] * f[None, :]
    return f / f.sum()


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """[1,3,3,1] blur and stride 2 (StyleGAN2's downsampling filter), edges replicated:
    ``[B, C, H, W] -> [B, C, H/2, W/2]``."""
    B, C, H, W = x.shape
    k = _blur_kernel(x.device, x.dtype).expand(C, 1, 4, 4)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k, stride=2, groups=C)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """2x upsampling with StyleGAN2's [1,3,3,1] filter (zero insertion, filter, gain 4) with
    replicated edges, which is exactly bilinear interpolation (``align_corners=False``)."""
    return F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)


def resize(x: torch.Tensor, size: int) -> torch.Tensor:
    """Square resize of ``[B, C, H, W]``: area (antialiased) down, bilinear up."""
    if x.shape[-1] == size:
        return x
    if x.shape[-1] > size:
        return F.interpolate(x, size=(size, size), mode="area")
    return F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
