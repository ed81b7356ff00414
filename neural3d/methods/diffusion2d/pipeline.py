"""One object per experiment: network + schedule + loss + sampling, for every architecture.

``DiffusionPipeline(exp)`` builds the network of ``exp.model.architecture`` (``unet``, ``dit``,
``mdm``, ``fdm``, ``kaleido``, ``dart``, ``cascade``, ``latent``) for images in ``[-1, 1]`` with
class labels
``0..num_classes-1`` (null label ``num_classes``). ``forward(x0, y, generator, step)`` returns
``(loss, parts)`` (so the shared trainer can wrap it, DDP included);
``generate(n, y, sampler, steps, cfg_scale, generator)`` returns images in ``[-1, 1]`` at
``exp.data.res``. ``fit_data(images)`` runs once on the training set before training (Kaleido
fits its k-means extractor there; a no-op otherwise); ``before_step(step, images)`` runs before
every training step (latent diffusion measures its latent std there, once, at the switch from
its autoencoder stage to its diffusion stage).
"""

from __future__ import annotations

import torch
from torch import nn

from neural3d.diffusion.autoencoder import KLAutoencoder, PatchDiscriminator
from neural3d.diffusion.cascade import CascadedDiffusion, SRConditioned
from neural3d.diffusion.dart import DARTLevels, DARTransformer, dart_loss, dart_sample
from neural3d.diffusion.dit import DiT
from neural3d.diffusion.fdm import FDM
from neural3d.diffusion.guidance import classifier_free_guidance
from neural3d.diffusion.kaleido import ARPrior, Kaleido, KMeansExtractor, LatentConditioned
from neural3d.diffusion.latent import LatentDiffusion
from neural3d.diffusion.mdm import MatryoshkaDiffusion, NestedUNet, active_levels
from neural3d.diffusion.parameterization import DiffusionObjective
from neural3d.diffusion.samplers import sample as run_sampler
from neural3d.diffusion.schedules import make_schedule
from neural3d.diffusion.unet import UNet, drop_labels
from neural3d.methods.diffusion2d.config import DiffusionExperiment

ARCHITECTURES = ("unet", "dit", "mdm", "fdm", "kaleido", "dart", "cascade", "latent")


class DiffusionPipeline(nn.Module):
    def __init__(self, exp: DiffusionExperiment, num_classes: int | None = None,
                 in_channels: int = 3):
        super().__init__()
        m, d = exp.model, exp.diffusion
        if m.architecture not in ARCHITECTURES:
            raise ValueError(f"model.architecture '{m.architecture}' unknown (use one of "
                             f"{ARCHITECTURES})")
        self.exp = exp
        self.architecture = m.architecture
        self.num_classes = len(exp.data.categories) if num_classes is None else num_classes
        self.res, self.in_channels = exp.data.res, in_channels
        self.schedule = make_schedule(d.schedule, d.num_steps, d.shift)
        self.objective = DiffusionObjective(self.schedule, d.parameterization, d.weighting,
                                            d.min_snr_gamma, d.snr_power)
        unet_kw = dict(channels=m.channels, channel_mult=tuple(m.channel_mult),
                       num_res_blocks=m.num_res_blocks,
                       attention_resolutions=tuple(m.attention_resolutions), dropout=m.dropout)
        self.mdm = self.fdm = None
        if m.architecture == "unet" or m.architecture == "fdm":
            self.net = UNet(in_channels, resolution=self.res, num_classes=self.num_classes,
                            **unet_kw)
            if m.architecture == "fdm":
                self.fdm = FDM(self.schedule, m.fdm_stages, m.fdm_transform,
                               weighting=d.weighting if d.weighting != "native" else "min_snr",
                               min_snr_gamma=d.min_snr_gamma)
        elif m.architecture == "dit":
            self.net = DiT(in_channels, resolution=self.res, patch=m.patch, dim=m.dim,
                           depth=m.depth, heads=m.heads, num_classes=self.num_classes)
        elif m.architecture == "kaleido":
            k = m.kaleido
            extractor = KMeansExtractor(k.clusters, in_channels, k.pool, k.cells)
            unet = UNet(in_channels, resolution=self.res, num_classes=self.num_classes,
                        cond_channels=in_channels + 1 if k.latent_image else 0, **unet_kw)
            net = LatentConditioned(unet, k.clusters, extractor.length,
                                    extractor if k.latent_image else None)
            self.net = Kaleido(net, extractor,
                               ARPrior(k.clusters, extractor.length, self.num_classes,
                                       k.prior_dim, k.prior_depth, k.prior_heads),
                               self.objective, self.num_classes, d.cond_drop, k.prior_weight)
        elif m.architecture == "dart":
            if d.parameterization != "x0":
                raise ValueError("model.architecture=dart predicts x0: set "
                                 "diffusion.parameterization=x0")
            self.net = DARTransformer(in_channels, self.res, m.patch, m.dim, m.depth, m.heads,
                                      m.dart.steps, self.num_classes, m.dart.history_mask,
                                      token_ar=m.dart.token_ar)
            self.levels = DARTLevels.from_schedule(self.schedule, m.dart.steps)
        elif m.architecture == "cascade":
            self.net = self._cascade(unet_kw)
        elif m.architecture == "latent":
            self.net = self._latent(unet_kw)
        else:
            if m.mdm_resolutions[0] != self.res:
                raise ValueError(f"model.mdm_resolutions[0] ({m.mdm_resolutions[0]}) must equal "
                                 f"data.res ({self.res})")
            if len(m.mdm_loss_weights) != len(m.mdm_resolutions):
                raise ValueError(f"model.mdm_loss_weights needs one weight per resolution of "
                                 f"model.mdm_resolutions ({m.mdm_resolutions})")
            self.net = NestedUNet(in_channels, m.mdm_resolutions, m.shell_channels,
                                  m.shell_blocks, inner={**unet_kw, "dropout": m.dropout},
                                  num_classes=self.num_classes, dropout=m.dropout)
            self.mdm = MatryoshkaDiffusion(self.net, self.schedule, d.parameterization,
                                           loss_weights=m.mdm_loss_weights,
                                           weighting=d.weighting, min_snr_gamma=d.min_snr_gamma,
                                           shift_power=m.mdm_shift_power)
        self.null_label = self.num_classes

    def _cascade(self, unet_kw: dict) -> CascadedDiffusion:
        m, d, c = self.exp.model, self.exp.diffusion, self.exp.model.cascade
        if c.base_res >= self.res or self.res % c.base_res:
            raise ValueError(f"model.cascade.base_res ({c.base_res}) must divide data.res "
                             f"({self.res}) and be smaller")
        base = UNet(self.in_channels, resolution=c.base_res, num_classes=self.num_classes,
                    **unet_kw)
        sr = SRConditioned(UNet(
            self.in_channels, resolution=self.res, num_classes=self.num_classes,
            cond_channels=self.in_channels, channels=c.sr_channels,
            channel_mult=tuple(c.sr_channel_mult), num_res_blocks=c.sr_num_res_blocks,
            attention_resolutions=tuple(c.sr_attention_resolutions), dropout=m.dropout))
        sr_objective = DiffusionObjective(make_schedule(d.schedule, d.num_steps, c.sr_shift),
                                          d.parameterization, d.weighting, d.min_snr_gamma,
                                          d.snr_power)
        return CascadedDiffusion(base, sr, self.objective, sr_objective, c.base_res, c.aug_max,
                                 self.num_classes)

    def _latent(self, unet_kw: dict) -> LatentDiffusion:
        lc = self.exp.model.latent
        levels = lc.factor.bit_length() - 1
        if lc.factor != 2 ** levels or self.res % lc.factor:
            raise ValueError(f"model.latent.factor ({lc.factor}) must be a power of 2 dividing "
                             f"data.res ({self.res})")
        ae = KLAutoencoder(self.in_channels, lc.latent_channels, lc.ae_channels, levels,
                           lc.ae_blocks)
        denoiser = UNet(lc.latent_channels, resolution=self.res // lc.factor,
                        num_classes=self.num_classes, **unet_kw)
        disc = PatchDiscriminator(self.in_channels, lc.disc_channels) if lc.discriminator \
            else None
        return LatentDiffusion(ae, denoiser, self.objective, lc.ae_steps, self.num_classes,
                               lc.kl_weight, disc, lc.disc_weight, lc.disc_start)

    def fit_data(self, images: torch.Tensor) -> None:
        """Once, on the training images ``[N, C, H, W]``, before training."""
        if self.architecture == "kaleido":
            self.net.fit(images, self.exp.model.kaleido.kmeans_iters, self.exp.data.seed)

    def before_step(self, step: int, images: torch.Tensor) -> None:
        """Before training step ``step`` (``images``: the training set)."""
        if self.architecture == "latent" and step >= self.net.ae_steps \
                and not self.net.scale_fitted:
            self.net.fit_scale(images)

    def forward(self, x0: torch.Tensor, y: torch.Tensor | None = None,
                generator: torch.Generator | None = None, step: int = 0):
        d = self.exp.diffusion
        if self.architecture == "kaleido":  # drops y and z together
            if y is None:
                raise ValueError("Kaleido needs class labels y (its prior is p(z | y))")
            return self.net(x0, y, generator)
        if y is not None:
            y = drop_labels(y, d.cond_drop, self.null_label, generator)
        if self.architecture == "mdm":
            levels = active_levels(step, self.exp.model.grow_at, self.net.num_levels)
            return self.mdm.loss(x0, y=y, levels=levels, generator=generator)
        if self.architecture == "fdm":
            return self.fdm.loss(self.net, x0, generator=generator, y=y)
        if self.architecture == "cascade":
            return self.net.loss(x0, y=y, generator=generator)
        if self.architecture == "latent":
            return self.net.loss(x0, y=y, step=step, generator=generator)
        if self.architecture == "dart":
            return dart_loss(self.net, x0, self.levels, self.objective, y, generator)[0], {}
        loss = self.objective.loss(self.net, x0, generator=generator, y=y)
        return loss, {}

    @torch.no_grad()
    def generate(self, n: int, y: torch.Tensor | None = None, sampler: str | None = None,
                 steps: int | None = None, cfg_scale: float = 1.0,
                 generator: torch.Generator | None = None, progress: bool = False,
                 aug_level: float | None = None, **kwargs) -> torch.Tensor:
        """``n`` images ``[n, C, res, res]`` in ``[-1, 1]`` (clipped). ``sampler``/``steps``
        default to DDIM-50 (``steps`` = network evaluations: the cascade splits them between its
        stages, ``model.cascade.base_fraction``); DART has its own sampler (``"dart"``) with
        ``model.dart.steps`` calls. ``aug_level``: the cascade's conditioning-augmentation level
        (default ``model.cascade.sample_aug``)."""
        dev = next(self.parameters()).device
        if y is not None:
            y = y.to(dev)
        if aug_level is not None and self.architecture != "cascade":
            raise ValueError("aug_level is a choice of model.architecture=cascade only")
        if self.architecture == "dart":
            if sampler not in (None, "dart") or steps not in (None, self.levels.steps):
                raise ValueError(f"DART samples with its own sampler in model.dart.steps = "
                                 f"{self.levels.steps} calls (got sampler={sampler}, "
                                 f"steps={steps})")
            return dart_sample(self.net, n, self.levels, y, cfg_scale, generator, dev,
                               clip=1.0).clamp(-1, 1)
        sampler, steps = sampler or "ddim", steps or 50
        null = torch.full((n,), self.null_label, dtype=torch.long, device=dev)
        if self.architecture == "latent":  # latents are not bounded: no x0 clipping
            return self.net.sample(n, y, cfg_scale, generator, dev, sampler=sampler,
                                   steps=steps, progress=progress, **kwargs).clamp(-1, 1)
        if self.architecture != "fdm":
            kwargs.setdefault("thresholding", "clip")
        if self.architecture == "cascade":
            c = self.exp.model.cascade
            out, _ = self.net.sample(n, self.in_channels, self.res, y, cfg_scale, steps,
                                     c.base_fraction,
                                     c.sample_aug if aug_level is None else aug_level,
                                     generator, dev, sampler=sampler, progress=progress,
                                     **kwargs)
            return out.clamp(-1, 1)
        if self.architecture == "mdm":
            outs = self.mdm.sample(n, sampler=sampler, steps=steps, y=y, cfg_scale=cfg_scale,
                                   generator=generator, device=dev, progress=progress, **kwargs)
            return outs[0].clamp(-1, 1)
        if self.architecture == "fdm":
            if sampler not in ("ddim", "ddpm"):
                raise ValueError("f-DM samples with 'ddim' (eta=0) or 'ddpm' (eta=1)")
            eta = kwargs.pop("eta", 1.0 if sampler == "ddpm" else 0.0)
            out = self.fdm.sample(self.net, n, self.in_channels, self.res, steps=steps, eta=eta,
                                  model_kwargs={"y": y} if y is not None else {},
                                  cfg_scale=cfg_scale if y is not None else 1.0,
                                  uncond={"y": null}, generator=generator, device=dev,
                                  thresholding="clip")
            return out.clamp(-1, 1)
        if self.architecture == "kaleido":
            return self.net.sample((n, self.in_channels, self.res, self.res), y, cfg_scale,
                                   generator, dev, sampler=sampler, steps=steps,
                                   progress=progress, **kwargs).clamp(-1, 1)
        model = self.net
        cond = {}
        if y is not None:
            cond = {"y": y}
            if cfg_scale != 1.0:
                model = classifier_free_guidance(self.net, cfg_scale, {"y": null})
        out = run_sampler(model, (n, self.in_channels, self.res, self.res), self.schedule,
                          sampler=sampler, steps=steps,
                          parameterization=self.exp.diffusion.parameterization,
                          model_kwargs=cond, generator=generator, device=dev,
                          progress=progress, **kwargs)
        return out.clamp(-1, 1)
