"""Latent diffusion (Rombach et al., CVPR 2022): diffusion in the latent space of a
KL-regularised autoencoder (:mod:`neural3d.diffusion.autoencoder`).

Two stages in one model, switched by the training step:

1. steps ``< ae_steps``: the autoencoder (and the optional discriminator) with
   :func:`~neural3d.diffusion.autoencoder.autoencoder_loss`;
2. then the denoiser on latents ``z = sample(q(z | x)) / latent_std`` with the diffusion
   objective; the autoencoder is frozen (encoded without gradients).

``latent_std`` (a buffer, so it is checkpointed) is the std of the posterior means over the
training set, measured once by :meth:`LatentDiffusion.fit_scale` at the stage switch (LDM's
``scale_factor = 1 / std``, which LDM measures on the first batch). Sampling draws latents with
any sampler of :mod:`neural3d.diffusion.samplers` (no x0 clipping: latents are not bounded) and
decodes ``decode(z * latent_std)``.
"""

from __future__ import annotations

import torch
from torch import nn

from neural3d.diffusion.autoencoder import KLAutoencoder, PatchDiscriminator, autoencoder_loss
from neural3d.diffusion.guidance import classifier_free_guidance
from neural3d.diffusion.parameterization import DiffusionObjective
from neural3d.diffusion.samplers import sample as run_sampler


class LatentDiffusion(nn.Module):
    """``autoencoder`` + ``denoiser(z_t, t, y=)`` over its latents (see the module docstring)."""

    def __init__(self, autoencoder: KLAutoencoder, denoiser: nn.Module,
                 objective: DiffusionObjective, ae_steps: int, null_label: int | None = None,
                 kl_weight: float = 1e-6, discriminator: PatchDiscriminator | None = None,
                 disc_weight: float = 0.5, disc_start: int = 0):
        super().__init__()
        self.autoencoder, self.denoiser, self.discriminator = autoencoder, denoiser, discriminator
        self.objective, self.ae_steps, self.null_label = objective, int(ae_steps), null_label
        self.kl_weight, self.disc_weight, self.disc_start = kl_weight, disc_weight, disc_start
        self.register_buffer("latent_std", torch.zeros(()))

    @property
    def scale_fitted(self) -> bool:
        return bool(self.latent_std > 0)

    @torch.no_grad()
    def fit_scale(self, images: torch.Tensor, batch: int = 64) -> float:
        """Measure ``latent_std`` on ``images`` (the training set, ``[N, C, H, W]``)."""
        means = [self.autoencoder.encode(images[i:i + batch])[0].double()
                 for i in range(0, len(images), batch)]
        std = float(torch.cat(means).std())
        if not std > 0:
            raise ValueError(f"latent std is {std}: the autoencoder collapsed")
        self.latent_std.fill_(std)
        return std

    def encode(self, x: torch.Tensor, generator: torch.Generator | None = None,
               sample: bool = True) -> torch.Tensor:
        """Scaled latents of ``x`` (a posterior sample, or the mean if not ``sample``)."""
        if not self.scale_fitted:
            raise RuntimeError("the latent scale has not been measured (fit_scale)")
        mean, logvar = self.autoencoder.encode(x)
        z = mean
        if sample:
            z = mean + (0.5 * logvar).exp() * torch.randn(mean.shape, generator=generator).to(mean)
        return z / self.latent_std

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode(z * self.latent_std)

    def loss(self, x0: torch.Tensor, y: torch.Tensor | None = None, step: int = 0,
             generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict]:
        """Stage 1 (autoencoder) before ``ae_steps``, stage 2 (latent diffusion) after."""
        if step < self.ae_steps:
            disc = self.discriminator if step >= self.disc_start else None
            loss, parts = autoencoder_loss(self.autoencoder, x0, self.kl_weight, disc,
                                           self.disc_weight, generator)
            return loss, {f"ae_{k}": v for k, v in parts.items()}
        with torch.no_grad():
            z = self.encode(x0, generator)
        return self.objective.loss(self.denoiser, z, generator=generator, y=y), {}

    @torch.no_grad()
    def sample(self, n: int, y: torch.Tensor | None = None, cfg_scale: float = 1.0,
               generator: torch.Generator | None = None, device=None, **sampler_kw
               ) -> torch.Tensor:
        """``n`` decoded images ``[n, C, H, W]`` (not clipped). ``sampler_kw``: ``sampler``,
        ``steps``, ... of :func:`~neural3d.diffusion.samplers.sample`."""
        if not self.scale_fitted:
            raise RuntimeError("the latent scale has not been measured: the diffusion stage has "
                               "not started (train past model.latent.ae_steps)")
        model, cond = self.denoiser, {}
        if y is not None:
            cond = {"y": y}
            if cfg_scale != 1.0:
                model = classifier_free_guidance(self.denoiser, cfg_scale,
                                                 {"y": torch.full_like(y, self.null_label)})
        ae = self.autoencoder
        r = self.denoiser.resolution
        z = run_sampler(model, (n, ae.latent_channels, r, r), self.objective.schedule,
                        parameterization=self.objective.parameterization, model_kwargs=cond,
                        generator=generator, device=device, **sampler_kw)
        return self.decode(z)
