"""Rendering a batch of per-sample fields through the shared :class:`VolumeRenderer`: one camera
per generated sample, the field of sample ``b`` sees only the rays of image ``b``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from neural3d.cameras import Cameras, rays_for_pixels
from neural3d.render import RendererConfig, VolumeRenderer

#: ``batched(points [B, M, 3]) -> (density [B, M], features [B, M, C])``
BatchedField = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


def make_renderer(n_samples: int, n_importance: int, aabb) -> VolumeRenderer:
    """Stratified samples inside ``aabb``, refined by ``n_importance`` importance samples
    (jittered from the caller's generator in training mode)."""
    return VolumeRenderer(RendererConfig(n_samples=n_samples, n_importance=n_importance,
                                         aabb=tuple(float(a) for a in aabb)))


def render_batched(renderer: VolumeRenderer, batched: BatchedField, origins: torch.Tensor,
                   directions: torch.Tensor, background: torch.Tensor,
                   generator: torch.Generator | None = None) -> dict:
    """Render rays ``[B, P, 3]`` (P per sample) through ``batched``; returns the renderer's dict
    with ``features [B, P, C]`` and ``depth [B, P]``."""
    B, P = origins.shape[:2]

    def field(pos: torch.Tensor, dirs: torch.Tensor):
        R, S = pos.shape[:2]                                   # R = B * P rays
        density, feats = batched(pos.reshape(B, P * S, 3))
        return density.reshape(R, S), feats.reshape(R, S, -1)

    out = renderer(field, origins.reshape(-1, 3), directions.reshape(-1, 3),
                   background=background, generator=generator)
    out["features"] = out["features"].reshape(B, P, -1)
    out["depth"] = out["depth"].reshape(B, P)
    return out


def image_rays(cams: Cameras, res: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through every pixel of ``cams`` resized to ``res x res``: ``[B, res*res, 3]`` each."""
    o, d = cams.scaled(res, res).pixel_rays()
    B = len(cams)
    return o.reshape(B, -1, 3).to(device), d.reshape(B, -1, 3).to(device)


def grid_pixels(B: int, res: int, n: int, generator: torch.Generator | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """StyleNeRF's regularisation pixels: an ``n x n`` grid with stride ``res // n`` and a random
    offset per sample. Returns integer ``(px, py)`` of shape ``[B, n * n]`` (column, row)."""
    pace = max(res // n, 1)
    idx = torch.arange(0, pace * n, pace)
    off = (torch.rand(B, 2, generator=generator) * pace).floor().long()
    px = (idx[None, None, :] + off[:, None, :1]).expand(B, n, n)
    py = (idx[None, :, None] + off[:, None, 1:]).expand(B, n, n)
    return px.reshape(B, -1), py.reshape(B, -1)


def pixel_rays(cams: Cameras, res: int, px: torch.Tensor, py: torch.Tensor, device
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through the centres of integer pixels ``px, py [B, N]`` of ``cams`` at ``res``."""
    c = cams.scaled(res, res)
    B, N = px.shape
    idx = torch.arange(B)[:, None].expand(B, N).reshape(-1)
    o, d = rays_for_pixels(c, idx, px.reshape(-1) + 0.5, py.reshape(-1) + 0.5)
    return o.reshape(B, N, 3).to(device), d.reshape(B, N, 3).to(device)
