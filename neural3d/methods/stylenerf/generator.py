"""The generator: mapping network + a synthesis network chosen by ``generator.kind``, and the
progressive-growing schedule shared with the discriminator."""

from __future__ import annotations

import math

import torch
from torch import nn

from neural3d.methods.stylenerf.config import (
    EG3DGeneratorConfig,
    MappingConfig,
    ProgressiveConfig,
    StyleNeRFGeneratorConfig,
)
from neural3d.methods.stylenerf.eg3d import EG3DSynthesis
from neural3d.methods.stylenerf.layers import MappingNetwork, resize
from neural3d.methods.stylenerf.nerf import StyleNeRFSynthesis
from neural3d.methods.stylenerf.render import grid_pixels


def growth(cfg: ProgressiveConfig, levels: int, step: int) -> tuple[int, float]:
    """``(level, alpha)`` at ``step``: the image resolution is ``render_res * 2**level`` and the
    last level fades in with ``alpha`` (see :class:`ProgressiveConfig`)."""
    if not cfg.enabled or levels == 0:
        return levels, 1.0
    a = min(max((step - cfg.start) / (cfg.end - cfg.start), 0.0), 1.0)
    t = a * levels
    level = math.ceil(t)
    return level, (t - (level - 1) if level > 0 else 1.0)


class Generator(nn.Module):
    """``G(z, cams, level=None, alpha=1, psi=1) -> dict`` (``image``, ``raw``, ``depth``; see
    the synthesis networks). ``mapping(z) -> ws`` and ``synthesis(ws, cams, level, alpha,
    generator)`` are public for style mixing, truncation and the NeRF-path regulariser."""

    def __init__(self, mapping: MappingConfig,
                 synthesis: StyleNeRFGeneratorConfig | EG3DGeneratorConfig):
        super().__init__()
        self.cfg = synthesis
        self.synthesis = (EG3DSynthesis(synthesis, mapping.w_dim) if synthesis.kind == "eg3d"
                          else StyleNeRFSynthesis(synthesis, mapping.w_dim))
        self.mapping = MappingNetwork(mapping.z_dim, mapping.w_dim, self.synthesis.num_ws,
                                      mapping.layers, mapping.lr_mul, mapping.w_avg_beta)

    @property
    def levels(self) -> int:
        return self.cfg.levels

    def forward(self, z, cams, level: int | None = None, alpha: float = 1.0, psi: float = 1.0,
                mix_z=None, mix_cutoff: int | None = None, update_avg: bool = False,
                generator=None, nerf_path_pixels: int = 0) -> dict:
        """Images of latents ``z [B, z_dim]`` seen from ``cams`` (B cameras, any resolution).

        Style mixing: with ``mix_z``, the ws from index ``mix_cutoff`` on come from ``mix_z``.
        ``update_avg`` updates the mapping's running mean w (training). ``nerf_path_pixels = n``
        adds ``nerf_path`` (the NeRF-path error per sample, :func:`nerf_path_error`, on an
        ``n x n`` grid) once there is an upsampler level. Everything runs inside ``forward`` so
        that a DDP wrapper sees the whole computation."""
        ws = self.mapping(z, psi, update_avg)
        if mix_z is not None and mix_cutoff is not None and mix_cutoff < ws.shape[1]:
            ws = torch.cat([ws[:, :mix_cutoff], self.mapping(mix_z, psi)[:, mix_cutoff:]], 1)
        level = self.levels if level is None else level
        out = self.synthesis(ws, cams, level, alpha, generator)
        out["ws"] = ws
        if nerf_path_pixels > 0 and level > 0:
            out["nerf_path"] = nerf_path_error(self.synthesis, ws, cams, out["image"], level,
                                               alpha, nerf_path_pixels, generator)
        return out

    def d_input(self, out: dict) -> torch.Tensor:
        """What D sees of a generated sample: the image in [-1, 1], with the raw render resized
        to the image's size as three more channels for dual discrimination (EG3D)."""
        img = out["image"]
        if getattr(self.cfg, "dual_discrimination", False):
            img = torch.cat([img, resize(out["raw"], img.shape[-1])], 1)
        return img * 2 - 1

    def real_input(self, real: torch.Tensor, res: int, alpha: float = 1.0) -> torch.Tensor:
        """Real images ``[B, 3, H, W]`` in [0, 1] as D sees them at ``res``: downsampled, faded
        like the generator's last level (the lower level upsampled) while ``alpha < 1``, and
        for dual discrimination paired with their own ``render_res`` version."""
        img = resize(real, res)
        if alpha < 1.0:
            img = torch.lerp(resize(resize(img, res // 2), res), img, alpha)
        if getattr(self.cfg, "dual_discrimination", False):
            img = torch.cat([img, resize(resize(img, self.cfg.render_res), res)], 1)
        return img * 2 - 1

    @property
    def d_channels(self) -> int:
        return 6 if getattr(self.cfg, "dual_discrimination", False) else 3


def nerf_path_error(synthesis, ws, cams, image, level: int, alpha: float, n: int,
                    generator=None) -> torch.Tensor:
    """StyleNeRF's NeRF-path regulariser, per sample ``[B]``: ``n x n`` pixels of ``image
    [B, 3, R, R]`` (a grid with a random offset, :func:`~.render.grid_pixels`) against
    ``synthesis.nerf_path`` at those pixels; the squared difference summed over RGB and
    averaged over the pixels (the reference's ``l2``; its weight is applied by the caller)."""
    B, _, R, _ = image.shape
    px, py = grid_pixels(B, R, n, generator)
    path = synthesis.nerf_path(ws, cams, level, alpha, px, py, generator)
    flat = (py * R + px).to(image.device)
    target = image.flatten(2).gather(2, flat[:, None].expand(B, 3, -1)).permute(0, 2, 1)
    return (target - path).square().sum(-1).mean(-1)
