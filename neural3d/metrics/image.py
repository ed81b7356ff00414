"""PSNR and SSIM on float images in [0, 1], and the 8-bit rounding of saved images.

Images are ``[H, W, C]`` or ``[N, H, W, C]`` (channels last, as at the data boundary) with data
range 1. SSIM has two variants, both scikit-image's ``structural_similarity(a, b, data_range=1,
channel_axis=-1)`` with ``K1=0.01, K2=0.03``, the mean of the SSIM map over the region not
affected by the border (``(win-1)//2`` pixels cropped each side), per channel then averaged:

- ``variant="uniform"`` (default; what pixelNeRF and SSDNeRF report): scikit-image's defaults, a
  7×7 uniform window with the sample covariance (``use_sample_covariance=True``: variances scaled
  by ``49/48``).
- ``variant="gaussian"``: ``gaussian_weights=True, sigma=1.5, use_sample_covariance=False``, an
  11×11 Gaussian window (σ 1.5, truncated at 3.5σ), as Wang et al. and many NeRF codes use it.

:func:`to_8bit` rounds renders to the 8-bit values a saved PNG holds; the evaluation protocol
scores renders so rounded (as the papers score saved images). ``tests/test_metrics.py`` checks
both SSIM variants against scikit-image.
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


def to_8bit(x: torch.Tensor) -> torch.Tensor:
    """``round(x*255)/255`` of images in [0, 1] (clamped first), in ``x``'s float dtype: the
    values an 8-bit image file holds. uint8 input is scaled to float32 ``x/255``."""
    x = torch.as_tensor(x)
    if x.dtype == torch.uint8:
        return x.float() / 255
    return (x.clamp(0, 1) * 255).round() / 255


SSIM_VARIANTS = ("uniform", "gaussian")


def _gaussian_window(sigma: float = 1.5, truncate: float = 3.5) -> torch.Tensor:
    radius = int(truncate * sigma + 0.5)
    x = torch.arange(-radius, radius + 1, dtype=torch.float64)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    return g / g.sum()


def ssim(pred: torch.Tensor, target: torch.Tensor, reduction: str = "mean",
         variant: str = "uniform", win_size: int = 7, sigma: float = 1.5, k1: float = 0.01,
         k2: float = 0.03) -> torch.Tensor:
    """Structural similarity (data range 1) as scikit-image computes it: ``variant="uniform"``
    (its defaults: ``win_size``×``win_size`` uniform window, sample covariance) or
    ``"gaussian"`` (σ ``sigma``, population covariance); see the module docstring. Returns the
    mean over images, or ``[N]`` with ``reduction='none'``."""
    if variant not in SSIM_VARIANTS:
        raise ValueError(f"SSIM variant must be one of {SSIM_VARIANTS}, got {variant!r}")
    p, t = _batch(pred).double(), _batch(target).double()
    if p.shape != t.shape:
        raise ValueError(f"shape mismatch {tuple(p.shape)} vs {tuple(t.shape)}")
    N, H, W, C = p.shape
    if variant == "gaussian":
        g, cov_norm = _gaussian_window(sigma).to(p.device), 1.0
    else:
        if win_size < 3 or win_size % 2 == 0:
            raise ValueError(f"SSIM win_size must be odd and >= 3, got {win_size}")
        g = torch.full((win_size,), 1.0 / win_size, dtype=torch.float64, device=p.device)
        cov_norm = win_size**2 / (win_size**2 - 1.0)
    win = g.numel()
    if H < win or W < win:
        raise ValueError(f"SSIM needs images of at least {win}x{win}, got {H}x{W}")
    x = p.permute(0, 3, 1, 2).reshape(N * C, 1, H, W)
    y = t.permute(0, 3, 1, 2).reshape(N * C, 1, H, W)

    def filt(z):  # separable 'valid' filter == skimage's filter + border crop
        z = F.conv2d(z, g.view(1, 1, -1, 1))
        return F.conv2d(z, g.view(1, 1, 1, -1))

    ux, uy = filt(x), filt(y)
    uxx, uyy, uxy = filt(x * x), filt(y * y), filt(x * y)
    vx = cov_norm * (uxx - ux * ux)
    vy = cov_norm * (uyy - uy * uy)
    vxy = cov_norm * (uxy - ux * uy)
    c1, c2 = k1**2, k2**2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux**2 + uy**2 + c1) * (vx + vy + c2))
    per_image = s.reshape(N, C, -1).mean(dim=(1, 2))
    return per_image.mean().float() if reduction == "mean" else per_image.float()
