"""SSDNeRF model: shared triplane decoder + 2D diffusion U-Net over stacked triplanes.

Latents are ``[B, 3, C, R, R]`` (planes xy, xz, yz as in :mod:`neural3d.fields.triplane`); the
U-Net sees them as images ``[B, 3C, R, R]``. The latents themselves are not parameters of this
module (they live in a :class:`~neural3d.methods.ssdnerf.latents.LatentCache`).

Two spaces, as in the reference code: the **code** (what the decoder renders and the diffusion
model learns and samples) and the optimised **pre-activation** ``code_`` the cache stores, with
``code = activate(code_)`` (identity, or ``code_scale * tanh(code_)``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neural3d.diffusion import make_schedule
from neural3d.diffusion.parameterization import DiffusionObjective
from neural3d.diffusion.unet import UNet
from neural3d.fields.triplane import TriplaneField
from neural3d.methods.ssdnerf.config import SSDNeRFConfig
from neural3d.render import OccupiedSpanSampler, RendererConfig, VolumeRenderer, render_image
from neural3d.render.samplers import uniform


def reference_pixel_scale(views: torch.Tensor) -> torch.Tensor:
    """The reference's pixel-loss factor ``3 * (1 - exp(-0.1 V))`` per object of ``V`` views
    (``loss_coef = 0.1 / (H W)`` times the object's ``V H W`` rays)."""
    return 3 * (1 - torch.exp(-0.1 * views.double())).float()


class SSDNeRFModel(nn.Module):
    def __init__(self, cfg: SSDNeRFConfig):
        super().__init__()
        m, d = cfg.model, cfg.diffusion
        self.cfg = cfg
        self.C, self.R = m.plane_channels, m.plane_res
        self.field = TriplaneField(resolution=m.plane_res, channels=m.plane_channels,
                                   hidden=m.decoder_hidden, layers=m.decoder_layers,
                                   aabb=list(m.aabb), learn_planes=False,
                                   density_activation=m.density_activation,
                                   aggregate=m.plane_aggregate, decoder=m.decoder)
        self.unet = UNet(in_channels=3 * m.plane_channels, channels=m.unet_channels,
                         channel_mult=tuple(m.unet_mult), num_res_blocks=m.unet_blocks,
                         attention_resolutions=tuple(m.unet_attention), resolution=m.plane_res,
                         dropout=m.unet_dropout)
        self.renderer = VolumeRenderer(RendererConfig(
            n_samples=m.n_samples, aabb=tuple(m.aabb), background=tuple(m.background)))
        self.schedule = make_schedule(d.schedule, d.num_steps)
        self.parameterization = d.parameterization
        self.objective = DiffusionObjective(self.schedule, d.parameterization, "snr_pow",
                                            snr_power=d.snr_power)
        # loss.scaling = reference: running mean of x0**2 that divides the diffusion loss
        self.register_buffer("norm_factor", torch.ones(()),
                             persistent=cfg.loss.scaling == "reference")

    def render_weights(self, views: torch.Tensor) -> torch.Tensor:
        """The pixel-MSE weight of objects seen in ``views [N]`` views: ``loss.render_weight``,
        times :func:`reference_pixel_scale` under ``loss.scaling = reference``."""
        w = torch.full(views.shape, self.cfg.loss.render_weight)
        return w * reference_pixel_scale(views) if self.cfg.loss.scaling == "reference" else w

    # ------------------------------------------------------------------ code activation
    def activate(self, code_: torch.Tensor) -> torch.Tensor:
        """Pre-activation ``code_`` (what the cache optimises) -> the code."""
        m = self.cfg.model
        return m.code_scale * torch.tanh(code_) if m.code_activation == "tanh" else code_

    def deactivate(self, code: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
        """Inverse of :meth:`activate` (codes at the tanh bound are pulled in by ``eps``)."""
        m = self.cfg.model
        if m.code_activation != "tanh":
            return code
        return torch.atanh((code / m.code_scale).clamp(-1 + eps, 1 - eps))

    # ------------------------------------------------------------------ shapes
    @property
    def latent_shape(self) -> tuple[int, int, int, int]:
        return (3, self.C, self.R, self.R)

    def to_image(self, latents: torch.Tensor) -> torch.Tensor:
        return latents.reshape(latents.shape[0], 3 * self.C, self.R, self.R)

    def from_image(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(x.shape[0], 3, self.C, self.R, self.R)

    # ------------------------------------------------------------------ rendering
    def _latent_field(self, latents: torch.Tensor):
        """The field of ``latents [B,3,C,R,R]`` over ``B`` equal groups of flat rays: the
        renderer's ``positions [B*N, S, 3]`` -> ``(density [B*N, S], rgb [B*N, S, 3])``."""
        B = latents.shape[0]

        def fld(pos, dirs):
            S = pos.shape[-2]
            dirs = dirs.expand_as(pos).reshape(B, -1, S, 3) if self.field.view_dependent \
                else None
            sigma, rgb = self.field(pos.reshape(B, -1, S, 3), dirs, planes=latents)
            return sigma.reshape(-1, S), rgb.reshape(-1, S, rgb.shape[-1])

        return fld

    @torch.no_grad()
    def occupancy(self, latents: torch.Tensor, generator: torch.Generator | None = None,
                  chunk: int = 1 << 20) -> torch.Tensor:
        """Occupancy grids ``[B, G, G, G]`` (bool, over ``model.aabb``, ``G =
        model.occupancy_res``) of ``latents [B,3,C,R,R]``: the density at one random point per
        cell (``generator``), a cell occupied when at least ``min(the object's mean density,
        model.occupancy_threshold)`` (the reference's rule, with "at least" so that a uniform
        density, e.g. all-zero codes at the start, occupies every cell rather than none), then
        dilated by one cell.

        The reference keeps each object's grid across visits (an EMA, decay 0.9, of full sweeps
        made at every visit); this recomputes it from the current code at every render, so no
        per-object state is stored, and dilates instead of remembering."""
        m = self.cfg.model
        B, G = latents.shape[0], m.occupancy_res
        aabb = torch.as_tensor(m.aabb, dtype=latents.dtype, device=latents.device)
        lin = torch.arange(G, dtype=latents.dtype, device=latents.device)
        cells = torch.stack(torch.meshgrid(lin, lin, lin, indexing="ij"), -1).reshape(-1, 3)
        pts = aabb[:3] + (cells + uniform(cells.shape, generator, latents.dtype, latents.device)) \
            * (aabb[3:] - aabb[:3]) / G
        up = torch.tensor([0.0, 0.0, 1.0], dtype=latents.dtype, device=latents.device)
        step = max(1, chunk // B)
        density = torch.cat([
            self.field(p.expand(B, -1, -1)[:, :, None], up.expand(B, p.shape[0], 1, 3),
                       planes=latents)[0][..., 0]
            for p in pts.split(step)], dim=1)  # [B, G^3]
        thresh = density.mean(1, keepdim=True).clamp(max=m.occupancy_threshold)
        occ = (density >= thresh).reshape(B, 1, G, G, G).float()
        return F.max_pool3d(occ, 3, 1, 1)[:, 0] > 0

    def sampler_for(self, latents: torch.Tensor, generator: torch.Generator | None = None):
        """The sampler that renders ``latents`` (``model.sampler``): None (the renderer's
        stratified samples) or an :class:`~neural3d.render.OccupiedSpanSampler` over their
        :meth:`occupancy` grids."""
        m = self.cfg.model
        if m.sampler != "occupancy":
            return None
        return OccupiedSpanSampler(self.occupancy(latents.detach(), generator), m.aabb,
                                   m.n_samples, m.occupancy_bins)

    def render_rays(self, latents: torch.Tensor, origins: torch.Tensor, dirs: torch.Tensor,
                    generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """``latents [B,3,C,R,R]``, rays ``[B, N, 3]`` -> ``rgb [B, N, 3]``, ``opacity [B, N]``."""
        B, N = origins.shape[:2]
        out = self.renderer(self._latent_field(latents), origins.reshape(-1, 3),
                            dirs.reshape(-1, 3), generator=generator,
                            sampler=self.sampler_for(latents, generator))
        return {"rgb": out["rgb"].reshape(B, N, 3), "opacity": out["opacity"].reshape(B, N)}

    @torch.no_grad()
    def render_views(self, latent: torch.Tensor, cams, chunk: int = 4096) -> torch.Tensor:
        """One latent ``[1,3,C,R,R]`` (or ``[3,C,R,R]``) at every camera -> ``[V, H, W, 3]``
        (:func:`neural3d.render.render_image`, on the latent's device). Deterministic: the
        occupancy sweep (``model.sampler = occupancy``) draws from a generator seeded 0."""
        if latent.dim() == 4:
            latent = latent[None]
        sweep = torch.Generator(latent.device).manual_seed(0)
        return render_image(self.renderer, self._latent_field(latent), cams, chunk,
                            device=latent.device, dtype=latent.dtype,
                            sampler=self.sampler_for(latent, sweep))

    # ------------------------------------------------------------------ diffusion
    def denoise(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.unet(x_t, t)

    def diffusion_loss(self, latents: torch.Tensor, generator: torch.Generator | None = None,
                       reduce: bool = True, update_norm: bool = True) -> torch.Tensor:
        """Denoising loss of ``latents`` with SSDNeRF's weighting (the shared
        :class:`~neural3d.diffusion.parameterization.DiffusionObjective`, ``weighting="snr_pow"``):
        ``t`` from the schedule, the native MSE rescaled so that the x0-space weight is
        ``snr ** omega``. Its gradient flows into ``latents`` unless the caller detaches them.

        ``loss.scaling = reference`` (the reference's ``DDPMMSELossMod``): half the loss, divided
        by :attr:`norm_factor`, a running mean of ``mean(latents**2)`` updated (momentum
        ``loss.norm_momentum``) on every call in training mode with ``update_norm`` and frozen
        in eval mode."""
        loss = self.objective.loss(self.unet, self.to_image(latents), generator, reduce=reduce)
        if self.cfg.loss.scaling != "reference":
            return loss
        if self.training and update_norm:
            mom = self.cfg.loss.norm_momentum
            self.norm_factor.mul_(1 - mom).add_(mom * latents.detach().pow(2).mean())
        return 0.5 * loss / self.norm_factor

    def forward(self, latents: torch.Tensor, origins: torch.Tensor | None, dirs: torch.Tensor |
                None, target: torch.Tensor | None, diffusion_input: torch.Tensor | None,
                generator: torch.Generator | None = None, update_norm: bool = True,
                render_generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Training losses (called through the trainer's (DDP) wrapper) of the codes
        ``latents``: rendering MSE per object ``render_mse [B]`` of the rays (skipped when
        ``origins`` is None) and the diffusion loss of ``diffusion_input`` (skipped when None).
        ``generator`` draws the diffusion's t and noise, ``render_generator`` (default:
        ``generator``) the renderer's stratified samples."""
        out: dict[str, torch.Tensor] = {}
        if origins is not None:
            rgb = self.render_rays(latents, origins, dirs, render_generator or generator)["rgb"]
            out["render_mse"] = (rgb - target).pow(2).mean((1, 2))
        if diffusion_input is not None:
            out["diffusion"] = self.diffusion_loss(diffusion_input, generator,
                                                   update_norm=update_norm)
        return out

    # ------------------------------------------------------------------ sampling
    def sample(self, num: int, generator: torch.Generator | None = None, guidance=None,
               steps: int | None = None, sampler: str | None = None,
               x_T: torch.Tensor | None = None, device=None) -> torch.Tensor:
        """Sample ``num`` codes ``[num, 3, C, R, R]`` (DDIM or the ODE solver; x0 clipped to
        ``diffusion.clip_x0`` at every step when it is > 0)."""
        from neural3d.diffusion import sample as dsample

        d = self.cfg.diffusion
        device = device or next(self.parameters()).device
        was = self.training
        self.eval()
        shape = (num, 3 * self.C, self.R, self.R)
        if x_T is None:
            x_T = torch.randn(shape, generator=generator).to(device)
        x = dsample(self.denoise, shape, self.schedule, sampler=sampler or d.sampler,
                    steps=steps or d.sample_steps, parameterization=self.parameterization,
                    guidance=guidance, x_T=x_T, device=device,
                    thresholding="clip" if d.clip_x0 > 0 else None, clip=d.clip_x0)
        self.train(was)
        return self.from_image(x.detach())


def count_parameters(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())

