"""PSNR and SSIM on float images in [0, 1].

Images are ``[H, W, C]`` or ``[N, H, W, C]`` (channels last, as at the data boundary) with data
range 1. SSIM follows scikit-image's ``structural_similarity(a, b, gaussian_weights=True,
sigma=1.5, use_sample_covariance=False, data_range=1, channel_axis=-1)``: an 11×11 Gaussian
window (σ 1.5, truncated at 3.5σ), constants ``K1=0.01, K2=0.03``, the mean of the SSIM map over
the region not affected by the border (``(11-1)//2`` pixels cropped each side) and over channels.
``tests/test_metrics.py`` checks the agreement with scikit-image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _batch(x: torch.Tensor) -> torch.Tensor:
    x = torch.as_tensor(x)
    if x.dim() == 3:
        x = x[None]
    if x.dim() != 4:
        raise ValueError(f"images must be [H,W,C] or [N,H,W,C], got {tuple(x.shape)}")
    return x


def psnr(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Peak signal-to-noise ratio in dB (data range 1), per image then averaged
    (``reduction='none'`` gives ``[N]``)."""
    p, t = _batch(pred).double(), _batch(target).double()
    if p.shape != t.shape:
        raise ValueError(f"shape mismatch {tuple(p.shape)} vs {tuple(t.shape)}")
    mse = ((p - t) ** 2).flatten(1).mean(1).clamp_min(1e-12)
    val = -10.0 * torch.log10(mse)
    return val.mean().float() if reduction == "mean" else val.float()


def psnr_from_mse(mse: torch.Tensor | float) -> torch.Tensor:
    return -10.0 * torch.log10(torch.as_tensor(mse).clamp_min(1e-12))


def _gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean",
         sigma: float = 1.5, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Structural similarity (scikit-image's Gaussian variant, data range 1)."""
    p, t = _batch(pred).double(), _batch(target).double()
    if p.shape != t.shape:
        raise ValueError(f"shape mismatch {tuple(p.shape)} vs {tuple(t.shape)}")
    N, H, W, C = p.shape
    g = _gaussian_window(sigma).to(p.device)
    win = g.numel()
    if H < win or W < win:
        raise ValueError(f"SSIM needs images of at least {win}x{win}, got {H}x{W}")
    x = p.permute(0, 3, 1, 2).reshape(N * C, 1, H, W)
    y = t.permute(0, 3, 1, 2).reshape(N * C, 1, H, W)

    def filt(z):  # separable 'valid' Gaussian filter == skimage's filter + border crop
        z = F.conv2d(z, g.view(1, 1, -1, 1))
        return F.conv2d(z, g.view(1, 1, 1, -1))

    ux, uy = filt(x), filt(y)
    uxx, uyy, uxy = filt(x * x), filt(y * y), filt(x * y)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    c1, c2 = k1**2, k2**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    per_image = s.reshape(N, C, -1).mean(dim=(1, 2))
    return per_image.mean().float() if reduction == "mean" else per_image.float()
