"""Cascaded diffusion (Ho et al., JMLR 2022, "Cascaded Diffusion Models for High Fidelity Image
Generation"): a base model at low resolution and a super-resolution (SR) diffusion model
conditioned on the upsampled low-resolution image.

- :class:`SRConditioned`: the SR denoiser ``net(x_t, t, y=None, low=None, aug=None)``. ``low``
  ``[B, C, h, w]`` (the possibly noised low-resolution image) is upsampled bilinearly to the
  target size and concatenated to ``x_t`` as channels (a :class:`~neural3d.diffusion.unet.UNet`
  built with ``cond_channels = C``); ``aug`` ``[B]`` (the conditioning-augmentation level, a
  time in ``[0, 1]``) is embedded like ``t`` (sinusoids of ``1000 aug`` + MLP) and added to the
  time + label embedding.
- **Gaussian conditioning augmentation** (CDM section 3.2): the clean low-resolution image
  ``x_lo`` is replaced by ``alpha(s) x_lo + sigma(s) eps`` of the low-resolution schedule, ``s``
  drawn uniformly on ``[0, aug_max]`` per training sample and passed to the SR model; at
  sampling ``s`` is a free choice (``sample_aug``), applied to the base model's sample.
- :class:`CascadedDiffusion`: both stages. ``loss`` trains both on the same batch (the base on
  the average-pooled images, the SR model on the full ones; the two networks share nothing, so
  summing the losses trains each as on its own), ``sample`` runs the base model then the SR
  model, splitting the network evaluations between them.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from neural3d.diffusion.guidance import classifier_free_guidance
from neural3d.diffusion.parameterization import DiffusionObjective
from neural3d.diffusion.samplers import sample as run_sampler
from neural3d.diffusion.unet import UNet, timestep_embedding


class SRConditioned(nn.Module):
    """``net(x_t, t, y=None, low=None, aug=None) -> [B, C, H, W]`` around a
    :class:`~neural3d.diffusion.unet.UNet` with ``cond_channels = in_channels``. ``low=None``
    feeds zeros; ``aug=None`` is level 0 (clean conditioning)."""

    def __init__(self, unet: UNet):
        super().__init__()
        if unet.cond_channels != unet.in_channels:
            raise ValueError("the SR U-Net needs cond_channels == in_channels (the low-res "
                             "image is concatenated to its input)")
        self.unet = unet
        emb_dim = unet.embed.time[-1].out_features
        self.base_ch = unet.embed.base_ch
        self.aug_embed = nn.Sequential(nn.Linear(self.base_ch, emb_dim), nn.SiLU(),
                                       nn.Linear(emb_dim, emb_dim))

    def forward(self, x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None,
                low: torch.Tensor | None = None, aug: torch.Tensor | None = None
                ) -> torch.Tensor:
        if t.ndim == 0:
            t = t.expand(x.shape[0])
        if aug is None:
            aug = torch.zeros_like(t)
        elif aug.ndim == 0:
            aug = aug.expand(x.shape[0])
        emb = self.unet.embed(t, y) + self.aug_embed(timestep_embedding(aug, self.base_ch))
        cond = None
        if low is not None:
            cond = F.interpolate(low.to(x), size=x.shape[-2:], mode="bilinear",
                                 align_corners=False)
        return self.unet.out(self.unet.features(x, emb, cond=cond))


class CascadedDiffusion(nn.Module):
    """Base model ``base(x, t, y=)`` at ``base_res`` + :class:`SRConditioned` ``sr`` at the data
    resolution, each with its own :class:`DiffusionObjective` (schedule, parameterisation,
    weighting). ``aug_max``: training augmentation levels ``s ~ U[0, aug_max]``, noised with the
    base objective's schedule."""

    def __init__(self, base: nn.Module, sr: SRConditioned, base_objective: DiffusionObjective,
                 sr_objective: DiffusionObjective, base_res: int, aug_max: float = 0.5,
                 null_label: int | None = None):
        super().__init__()
        self.base, self.sr = base, sr
        self.base_objective, self.sr_objective = base_objective, sr_objective
        self.base_res, self.aug_max, self.null_label = int(base_res), float(aug_max), null_label

    def low_res(self, x0: torch.Tensor) -> torch.Tensor:
        """The base model's data: ``x0`` average-pooled to ``base_res``."""
        return F.adaptive_avg_pool2d(x0, self.base_res)

    def augment(self, low: torch.Tensor, aug: torch.Tensor,
                generator: torch.Generator | None = None) -> torch.Tensor:
        """Gaussian conditioning augmentation: ``alpha(s) low + sigma(s) eps`` per sample
        (``aug`` = ``s`` ``[B]``; ``s = 0`` returns ``low`` unchanged)."""
        a, s = self.base_objective.schedule.alpha_sigma(aug.double().cpu())
        a = torch.where(aug.cpu() > 0, a, torch.ones_like(a)).to(low)[:, None, None, None]
        s = torch.where(aug.cpu() > 0, s, torch.zeros_like(s)).to(low)[:, None, None, None]
        eps = torch.randn(low.shape, generator=generator).to(low)
        return a * low + s * eps

    def loss(self, x0: torch.Tensor, y: torch.Tensor | None = None,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """``x0`` ``[B, C, H, W]`` at the SR resolution; returns (base + SR loss, parts)."""
        low = self.low_res(x0)
        base = self.base_objective.loss(self.base, low, generator=generator, y=y)
        aug = self.aug_max * torch.rand(x0.shape[0], generator=generator)
        cond = self.augment(low, aug, generator)
        sr = self.sr_objective.loss(self.sr, x0, generator=generator, y=y, low=cond,
                                    aug=aug.to(x0.device))
        return base + sr, {"loss_base": base.detach(), "loss_sr": sr.detach()}

    @torch.no_grad()
    def sample(self, n: int, channels: int, res: int, y: torch.Tensor | None = None,
               cfg_scale: float = 1.0, steps: int = 50, base_fraction: float = 0.5,
               sample_aug: float = 0.1, generator: torch.Generator | None = None,
               device=None, low: torch.Tensor | None = None, **sampler_kw
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(high [n, C, res, res], low [n, C, base_res, base_res])``. ``steps`` network
        evaluations in all (per guided batch): ``round(base_fraction * steps)`` (at least 1)
        for the base model, the rest (at least 1) for the SR model. ``low`` skips the base
        stage (super-resolve given images). ``sample_aug``: the augmentation level of the SR
        model's conditioning. ``sampler_kw``: ``sampler``, ``thresholding``, ... of
        :func:`~neural3d.diffusion.samplers.sample`."""
        base_steps = min(max(1, round(base_fraction * steps)), max(1, steps - 1))
        sr_steps = max(1, steps - base_steps) if low is None else steps
        cond, uncond = ({"y": y}, {"y": torch.full_like(y, self.null_label)}) if y is not None \
            else ({}, {})

        def guided(net):
            if y is None or cfg_scale == 1.0:
                return net
            return classifier_free_guidance(net, cfg_scale, uncond)

        if low is None:
            low = run_sampler(guided(self.base), (n, channels, self.base_res, self.base_res),
                              self.base_objective.schedule, steps=base_steps,
                              parameterization=self.base_objective.parameterization,
                              model_kwargs=cond, generator=generator, device=device,
                              **sampler_kw)
        low = low.to(device)
        aug = torch.full((n,), float(sample_aug), device=device)
        noisy = self.augment(low, aug.cpu(), generator)
        high = run_sampler(guided(self.sr), (n, channels, res, res), self.sr_objective.schedule,
                           steps=sr_steps, parameterization=self.sr_objective.parameterization,
                           model_kwargs={**cond, "low": noisy, "aug": aug},
                           generator=generator, device=device, **sampler_kw)
        return high, low
