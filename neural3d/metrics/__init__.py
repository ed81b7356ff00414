"""Image metrics and the evaluation protocol: PSNR, SSIM, LPIPS, FID, KID.

See :mod:`neural3d.metrics.image` (PSNR, SSIM in scikit-image's default and Gaussian variants,
8-bit rounding),
:mod:`neural3d.metrics.lpips` (real backbone weights only, else ``None`` with a reason) and
:mod:`neural3d.metrics.fid` (Inception features, preprocessing notes, FID/KID).
"""

from __future__ import annotations

import torch

from neural3d.metrics.fid import (
    InceptionFeatures,
    compute_fid,
    fid_from_features,
    frechet_distance,
    kid_from_features,
)
from neural3d.metrics.image import psnr, psnr_from_mse, ssim, to_8bit
from neural3d.metrics.lpips import build_lpips, get_lpips, lpips_distance


def evaluate_views(pred: torch.Tensor, target: torch.Tensor, lpips_net: str = "vgg",
                   lpips: tuple[torch.nn.Module | None, str | None] | None = None
                   ) -> dict[str, float | str | None]:
    """Mean PSNR, SSIM (``ssim``: scikit-image's default, ``ssim_gaussian``: its Gaussian
    variant, see :func:`ssim`) and LPIPS of rendered views ``[N, H, W, 3]`` against the truth,
    both in [0, 1]. ``lpips``: a ``(model, reason)`` pair from :func:`get_lpips` built once by
    the caller (else built here); LPIPS is ``None`` + ``lpips_reason`` when there are no weights."""
    out: dict[str, float | str | None] = {
        "psnr": float(psnr(pred, target)), "ssim": float(ssim(pred, target)),
        "ssim_gaussian": float(ssim(pred, target, variant="gaussian"))}
    model, reason = lpips if lpips is not None else get_lpips(lpips_net)
    if model is None:
        out["lpips"], out["lpips_reason"] = None, reason
    else:
        out["lpips"] = float(lpips_distance(model, pred, target).mean())
        out["lpips_net"] = lpips_net
    return out


__all__ = [
    "InceptionFeatures",
    "build_lpips",
    "compute_fid",
    "evaluate_views",
    "fid_from_features",
    "frechet_distance",
    "get_lpips",
    "kid_from_features",
    "lpips_distance",
    "psnr",
    "psnr_from_mse",
    "ssim",
    "to_8bit",
]
