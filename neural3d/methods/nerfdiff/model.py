"""NerfDiff's networks: the single-image NeRF (image -> camera-aligned triplane -> MLP, rendered
by the shared :class:`~neural3d.render.VolumeRenderer`) and the 3D-aware conditional diffusion
model (CDM: a U-Net denoising a view given the NeRF's render of that view).

Shapes: images ``[B, H, W, 3]`` in ``[0, 1]`` (square), planes ``[B, 3, C, H, W]`` in the input
camera's frustum coordinates (:mod:`.frustum`), rays ``[B, N, 3]`` in world space (group ``b``
rendered with planes ``b``). The CDM works in ``[-1, 1]`` channels-first (``[B, 3, H, W]``).
"""

from __future__ import annotations

import torch
from torch import nn

from neural3d.cameras import Cameras
from neural3d.diffusion import make_schedule
from neural3d.diffusion.guidance import classifier_free_guidance
from neural3d.diffusion.parameterization import DiffusionObjective, to_x0
from neural3d.diffusion.unet import UNet
from neural3d.fields.triplane import TriplaneField
from neural3d.methods.nerfdiff.config import NerfDiffConfig
from neural3d.methods.nerfdiff.frustum import align_planes, frustum_coords
from neural3d.render import RendererConfig, VolumeRenderer


def to_signed(images: torch.Tensor) -> torch.Tensor:
    """``[B, H, W, 3]`` in ``[0, 1]`` -> ``[B, 3, H, W]`` in ``[-1, 1]`` (the CDM's space)."""
    return images.permute(0, 3, 1, 2) * 2 - 1


def from_signed(x: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`to_signed` (no clamping)."""
    return ((x + 1) / 2).permute(0, 2, 3, 1)


class NerfDiffModel(nn.Module):
    def __init__(self, cfg: NerfDiffConfig):
        super().__init__()
        m, c = cfg.model, cfg.cdm
        res = cfg.data.native_res()
        self.cfg, self.C, self.res = cfg, m.plane_channels, res
        self.depth_radius = m.depth_radius
        self.encoder = UNet(in_channels=3, out_channels=3 * m.plane_channels,
                            channels=m.encoder_channels, channel_mult=tuple(m.encoder_mult),
                            num_res_blocks=m.encoder_blocks,
                            attention_resolutions=tuple(m.encoder_attention), resolution=res)
        # the planes live in frustum coordinates: the field's box is [-1, 1]^3
        self.field = TriplaneField(resolution=res,
                                   channels=m.plane_channels + (3 if m.input_colour else 0),
                                   hidden=m.decoder_hidden, layers=m.decoder_layers,
                                   learn_planes=False, density_activation=m.density_activation,
                                   coord_freqs=m.decoder_coords)
        self.renderer = VolumeRenderer(RendererConfig(
            n_samples=m.n_samples, n_importance=m.n_importance, aabb=tuple(m.aabb),
            background=tuple(m.background)))
        self.cdm = UNet(in_channels=3, channels=c.channels, channel_mult=tuple(c.mult),
                        num_res_blocks=c.blocks, attention_resolutions=tuple(c.attention),
                        resolution=res, dropout=c.dropout,
                        cond_channels=6 if c.condition_on_input else 3)
        self.schedule = make_schedule(c.schedule)
        self.parameterization = c.parameterization
        self.objective = DiffusionObjective(self.schedule, c.parameterization, "native")

    # ------------------------------------------------------------------ the NeRF
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """Input views ``[B, H, W, 3]`` -> camera-aligned planes ``[B, 3, C, H, W]``; with
        ``model.input_colour`` ``[B, 3, C + 3, H, W]``: the last 3 channels of the first
        (pixel-aligned) plane are the input view's RGB in ``[0, 1]``, zeros on the others."""
        x = to_signed(images)
        t = x.new_zeros(x.shape[0])
        planes = align_planes(self.encoder(x, t), self.C)
        if not self.cfg.model.input_colour:
            return planes
        colour = torch.zeros_like(planes[:, :, :3])
        colour[:, 0] = images.permute(0, 3, 1, 2)
        return torch.cat([planes, colour], 2)

    def _field(self, planes: torch.Tensor, cams_in: Cameras):
        """The renderer's field over ``B`` equal groups of flat rays: positions
        ``[B*N, S, 3]`` -> ``(density [B*N, S], rgb [B*N, S, 3])``."""
        B = planes.shape[0]

        def fld(pos, _dirs):
            S = pos.shape[-2]
            xn = frustum_coords(cams_in, pos.reshape(B, -1, 3), self.depth_radius)
            sigma, rgb = self.field(xn.reshape(B, -1, S, 3), planes=planes)
            return sigma.reshape(-1, S), rgb.reshape(-1, S, rgb.shape[-1])

        return fld

    def render_rays(self, planes: torch.Tensor, cams_in: Cameras, origins: torch.Tensor,
                    dirs: torch.Tensor, generator: torch.Generator | None = None,
                    jitter: bool | None = None) -> torch.Tensor:
        """``planes [B, ...]``, input cameras (B), rays ``[B, N, 3]`` -> ``rgb [B, N, 3]``."""
        B, N = origins.shape[:2]
        out = self.renderer(self._field(planes, cams_in), origins.reshape(-1, 3),
                            dirs.reshape(-1, 3), generator=generator, jitter=jitter)
        return out["rgb"].reshape(B, N, 3)

    @torch.no_grad()
    def render_images(self, planes: torch.Tensor, cams_in: Cameras, cams: Cameras,
                      chunk: int = 16384) -> torch.Tensor:
        """Image ``b`` of camera ``cams[b]`` with ``planes[b]`` seen from ``cams_in[b]``
        (deterministic samples, no grad) -> ``[B, H, W, 3]`` in ``[0, 1]``."""
        o, d = cams.to(planes.device).pixel_rays()
        B, H, W = o.shape[:3]
        o, d = o.reshape(B, -1, 3).to(planes), d.reshape(B, -1, 3).to(planes)
        cams_in = cams_in.to(planes.device)
        step = max(1, chunk // B)
        rgb = torch.cat([self.render_rays(planes, cams_in, o[:, s:s + step], d[:, s:s + step],
                                          jitter=False)
                         for s in range(0, H * W, step)], 1)
        return rgb.reshape(B, H, W, 3).clamp(0, 1)

    def render_views(self, planes: torch.Tensor, cam_in: Cameras, cams: Cameras,
                     batch: int = 8) -> torch.Tensor:
        """One object's planes ``[1, ...]`` and input camera (len 1) seen from every camera of
        ``cams`` -> ``[V, H, W, 3]``."""
        out = []
        for s in range(0, len(cams), batch):
            idx = torch.arange(s, min(s + batch, len(cams)))
            n = len(idx)
            out.append(self.render_images(planes.expand(n, -1, -1, -1, -1),
                                          cam_in[torch.zeros(n, dtype=torch.long)], cams[idx]))
        return torch.cat(out)

    # ------------------------------------------------------------------ the CDM
    def condition(self, renders: torch.Tensor, inputs: torch.Tensor | None = None
                  ) -> torch.Tensor:
        """The CDM's condition ``[B, 3 or 6, H, W]``: the NeRF renders (and the input views
        when ``cdm.condition_on_input``), images ``[B, H, W, 3]`` in ``[0, 1]``."""
        parts = [to_signed(renders)]
        if self.cfg.cdm.condition_on_input:
            parts.append(to_signed(inputs))
        return torch.cat(parts, 1)

    def denoise(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor | None = None
                ) -> torch.Tensor:
        """The CDM's prediction (``cdm.parameterization``); ``cond=None`` is unconditional.
        With ``cdm.residual`` the prediction is the condition's render plus the network's
        output (a zeroed condition adds nothing)."""
        out = self.cdm(x_t, t, cond=cond)
        if self.cfg.cdm.residual and cond is not None:
            out = out + cond[:, :3]
        return out

    def predict_x0(self, x_t: torch.Tensor, t: float, cond: torch.Tensor | None,
                   guidance_scale: float = 1.0) -> torch.Tensor:
        """The CDM's clean estimate at time ``t`` with classifier-free guidance ``uncond + w
        (cond - uncond)`` (``w = 1``: plain conditional)."""
        tt = torch.full((x_t.shape[0],), float(t), device=x_t.device)
        cfg_model = classifier_free_guidance(self.denoise, guidance_scale, {"cond": None},
                                             batched=False)
        pred = cfg_model(x_t, tt, cond=cond)
        alpha, sigma = self.alpha_sigma(t, x_t)
        return to_x0(pred, self.parameterization, x_t, alpha, sigma)

    def alpha_sigma(self, t: float, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(alpha_t, sigma_t)`` as scalars of ``like``'s dtype/device (``t = 0``: ``(1, 0)``)."""
        if t <= 0:
            return like.new_ones(()), like.new_zeros(())
        a, s = self.schedule.alpha_sigma(torch.tensor(float(t), dtype=torch.float64))
        return a.to(like), s.to(like)

    # ------------------------------------------------------------------ training
    def forward(self, images: torch.Tensor | None, cams_in: Cameras | None = None,
                origins: torch.Tensor | None = None, dirs: torch.Tensor | None = None,
                rgb: torch.Tensor | None = None, cdm_cams: Cameras | None = None,
                cdm_targets: torch.Tensor | None = None, cdm_cond: torch.Tensor | None = None,
                cond_drop: torch.Tensor | None = None,
                generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Training losses (called through the trainer's (DDP) wrapper).

        ``render_mse`` (when ``images`` are given): the planes of the input views ``images``
        seen from ``cams_in`` render the rays ``[B, N, 3]``, compared with ``rgb``.
        ``cdm`` (when ``cdm_targets [K, H, W, 3]`` are given): the denoising loss of the targets
        conditioned on ``cdm_cond`` or, without it, on the NeRF's render of the first ``K``
        objects from ``cdm_cams`` (made without grad: no gradient from the CDM reaches the
        NeRF); ``cond_drop [K]`` (bool) zeroes conditions (classifier-free dropout)."""
        out: dict[str, torch.Tensor] = {}
        if images is not None:
            planes = self.encode(images)
            pred = self.render_rays(planes, cams_in, origins, dirs, generator)
            out["render_mse"] = (pred - rgb).pow(2).mean()
        if cdm_targets is not None:
            if cdm_cond is None:
                K = len(cdm_cams)
                renders = self.render_images(planes[:K].detach(), cams_in[torch.arange(K)],
                                             cdm_cams)
                cdm_cond = self.condition(renders, images[:K])
            if cond_drop is not None:
                cdm_cond = cdm_cond * (~cond_drop).to(cdm_cond)[:, None, None, None]
            out["cdm"] = self.objective.loss(self.denoise, to_signed(cdm_targets), generator,
                                             cond=cdm_cond)
        return out
