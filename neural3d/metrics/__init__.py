"""Image metrics and the evaluation protocol: PSNR, SSIM, LPIPS, FID, KID.

See :mod:`neural3d.metrics.image` (PSNR/SSIM, scikit-image-compatible SSIM),
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
from neural3d.metrics.image import psnr, psnr_from_mse, ssim
from neural3d.metrics.lpips import build_lpips, get_lpips, lpips_distance


def evaluate_views(pred: torch.Tensor, target: torch.Tensor, lpips_net: str = "vgg"
                   ) -> dict[str, float | str | None]:
    """Mean PSNR, SSIM and LPIPS (``None`` + ``lpips_reason`` when weights are missing) of
    rendered views ``[N, H, W, 3]`` against the truth, both in [0, 1]."""
    out: dict[str, float | str | None] = {
        "psnr": float(psnr(pred, target)), "ssim": float(ssim(pred, target))}
    model, reason = get_lpips(lpips_net)
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
]
