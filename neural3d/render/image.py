"""The one chunked image renderer: every pixel of a set of cameras through a
:class:`~neural3d.render.VolumeRenderer` (used by ``neural3d fit``, SSDNeRF and evaluation)."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def render_image(renderer, field, cams, chunk: int = 8192, *, device=None, dtype=None,
                 **kwargs) -> torch.Tensor:
    """Render every pixel of the ``V`` cameras ``cams`` -> features ``[V, H, W, C]``, RGB
    (``C == 3``) clamped to ``[0, 1]``.

    Rays (``cams.pixel_rays()``) are moved to ``device``/``dtype`` (None: as they come) and
    rendered ``chunk`` at a time by ``renderer(field, origins, directions, **kwargs)`` (e.g.
    ``sampler=``, ``background=``) without grad, with ``renderer`` (and ``field``, when it is a
    module) in eval mode; their modes are restored afterwards. The image is on ``device``.
    """
    if chunk < 1:
        raise ValueError(f"render_image: chunk must be >= 1, got {chunk}")
    o, d = cams.pixel_rays()
    V, H, W = o.shape[:3]
    o = o.reshape(-1, 3).to(device=device, dtype=dtype)
    d = d.reshape(-1, 3).to(device=device, dtype=dtype)
    modules = [m for m in (renderer, field) if isinstance(m, nn.Module)]
    modes = [m.training for m in modules]
    for m in modules:
        m.eval()
    try:
        out = torch.cat([renderer(field, o[s:s + chunk], d[s:s + chunk], **kwargs)["features"]
                         for s in range(0, o.shape[0], chunk)])
    finally:
        for m, mode in zip(modules, modes, strict=True):
            m.train(mode)
    img = out.reshape(V, H, W, out.shape[-1])
    return img.clamp(0, 1) if img.shape[-1] == 3 else img
