"""Ray-traced dataset images shared by the synthetic sources (the toy category, scanned meshes).

:func:`trace_views` casts ``s x s`` sub-pixel rays per pixel of every camera and box-filters
them; :func:`lambert` is the one shading model (a fixed world key light, a weak fill light and
ambient, capped below white so that background pixels stay exactly white).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from neural3d.cameras import Cameras

_KEY = np.array([0.35, 0.25, 1.0]) / np.linalg.norm([0.35, 0.25, 1.0])
_FILL = np.array([-0.4, -0.6, -0.25]) / np.linalg.norm([-0.4, -0.6, -0.25])
_AMBIENT, _KEY_W, _FILL_W = 0.32, 0.62, 0.22
#: brightest shaded value: object pixels are never pure white
MAX_SHADE = 0.94

#: ``trace(origins [P,3], directions [P,3]) -> (rgb [P,3], hit [P] bool)``, float64 numpy
Tracer = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def lambert(albedo: np.ndarray, normals: np.ndarray) -> np.ndarray:
    """Shaded colour ``[P,3]`` of ``albedo [P,3]`` at unit ``normals [P,3]`` (facing the viewer)
    under the fixed world lights; view-independent, so a radiance field can represent it."""
    light = (_AMBIENT + _KEY_W * np.clip(normals @ _KEY, 0.0, None)
             + _FILL_W * np.clip(normals @ _FILL, 0.0, None))
    return np.clip(albedo * light[:, None], 0.0, MAX_SHADE)


def trace_views(cameras: Cameras, trace: Tracer, supersample: int = 1,
                chunk_rays: int = 1 << 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Images ``[V,H,W,3]`` float32 and coverage ``[V,H,W]`` (the fraction of sub-pixel rays
    that hit) of every camera: ``trace`` through pixel centres, or through an ``s x s`` grid of
    sub-pixel points averaged per pixel (``supersample = s``), about ``chunk_rays`` at a time."""
    c2w = cameras.c2w.detach().cpu().double().numpy()
    fx, fy, cx, cy = (getattr(cameras, k).detach().cpu().double().numpy()
                      for k in ("fx", "fy", "cx", "cy"))
    V, H, W, s = len(cameras), cameras.height, cameras.width, int(supersample)
    sub = (np.arange(s) + 0.5) / s
    xs = (np.arange(W)[:, None] + sub[None, :]).reshape(-1)  # [W*s]
    ys = (np.arange(H)[:, None] + sub[None, :]).reshape(-1)  # [H*s]
    out = np.empty((V, H * s, W * s, 3))
    alpha = np.empty((V, H * s, W * s))
    step = max(1, chunk_rays // (H * s * W * s))
    for v0 in range(0, V, step):
        vs = np.arange(v0, min(V, v0 + step))
        x = (xs[None, None, :] - cx[vs, None, None]) / fx[vs, None, None]
        y = (ys[None, :, None] - cy[vs, None, None]) / fy[vs, None, None]
        x, y = np.broadcast_arrays(x, y)
        dcam = np.stack([x, y, np.ones_like(x)], -1)  # [v, Hs, Ws, 3]
        d = np.einsum("vij,vhwj->vhwi", c2w[vs, :3, :3], dcam)
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        o = np.broadcast_to(c2w[vs, None, None, :3, 3], d.shape)
        rgb, hit = trace(o.reshape(-1, 3), d.reshape(-1, 3))
        out[vs] = rgb.reshape(d.shape)
        alpha[vs] = hit.reshape(d.shape[:-1])
    if s > 1:
        out = out.reshape(V, H, s, W, s, 3).mean((2, 4))
        alpha = alpha.reshape(V, H, s, W, s).mean((2, 4))
    return torch.from_numpy(out.astype(np.float32)), torch.from_numpy(alpha.astype(np.float32))
