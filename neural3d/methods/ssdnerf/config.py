"""Configuration of SSDNeRF (dataclasses <-> YAML, see :mod:`neural3d.config`).

Paper facts we follow (Chen et al., ICCV 2023, and its public configs): triplane latents
3 x 6 x 128 x 128 reshaped to 18 channels for the U-Net; DDPM linear beta schedule with 1000
steps; **v-prediction**; the diffusion loss weighted in x0-space by ``snr ** omega`` with
``omega = 0.5`` (the paper configs of Lakonik/SSDNeRF: 0.5 for cars, unconditional and
1-view alike, and ABO tables; 0.25 for chairs 1-view); diffusion weight constant
``c_diff = 4``; pixel MSE weight 20; L2 latent regulariser (power 2) weight 3e-3; shared
triplane decoder MLP (SiLU, trunc_exp density).

The reference code's details, each a switch (``configs/ssdnerf_*_reference.yaml`` turns them on):
``model.code_activation = tanh`` (the code is ``code_scale * tanh(code_)``, the cache holds
``code_``), ``model.plane_aggregate = concat`` + ``model.decoder = view_sh`` (18 features, one
hidden layer, a zero-initialised spherical-harmonics view branch), ``diffusion.clip_x0 = 2``
(x0 clipped at every sampling step, guided or not), ``loss.scaling = reference``
(``DDPMMSELossMod``: 0.5 * MSE divided by a running mean of ``x0**2``, momentum 1e-3; pixel loss
weight times ``3 * (1 - exp(-0.1 * V))`` for an object of ``V`` views). Our own choices are
marked in the field comments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from neural3d.config import Range, at_least, between, check_box, check_length, invalid, positive
from neural3d.methods.multiview import MultiViewDataConfig
from neural3d.train import TrainConfig


@dataclass
class ModelConfig:
    limits: ClassVar[dict[str, Range]] = {
        "plane_channels": at_least(1), "plane_res": between(1, 4096),
        "decoder_hidden": at_least(1), "decoder_layers": at_least(0), "aabb": Range(),
        "n_samples": at_least(1), "background": between(0, 1), "unet_channels": at_least(1),
        "unet_mult": at_least(1), "unet_blocks": at_least(1), "unet_attention": at_least(1),
        "unet_dropout": between(0, 1, hi_open=True), "code_scale": positive(),
        "occupancy_res": between(1, 512), "occupancy_threshold": positive(),
        "occupancy_bins": at_least(1)}
    plane_channels: int = 6         # per plane (paper: 6)
    plane_res: int = 128            # paper: 128
    decoder_hidden: int = 64
    decoder_layers: int = 2         # hidden layers of decoder "mlp"
    decoder: str = "mlp"            # mlp (ours) | view_sh (the reference: 1 layer + SH views)
    plane_aggregate: str = "sum"    # sum (ours) | concat (the reference: 3C features)
    code_activation: str = "none"   # none (ours) | tanh: code = code_scale * tanh(code_)
    code_scale: float = 2.0         # the reference's TanhCode scale
    density_activation: str = "trunc_exp"
    aabb: list = field(default_factory=lambda: [-0.5, -0.5, -0.5, 0.5, 0.5, 0.5])
    n_samples: int = 64             # samples per ray
    # sampler: stratified (ours: n_samples over the box) | occupancy (as the reference marches
    # a per-object density grid: n_samples over the ray's occupied cells only; the grid is swept
    # from the object's code at each render, see SSDNeRFModel.occupancy)
    sampler: str = "stratified"
    occupancy_res: int = 32         # grid cells per side (reference: 64 at 128^2 planes)
    occupancy_threshold: float = 0.2  # density; the reference's 0.1 in its units (poses x 2)
    occupancy_bins: int = 256       # bins per ray that find the occupied span (reference: 256
                                    # max steps along the box diagonal)
    background: list = field(default_factory=lambda: [1.0, 1.0, 1.0])
    # U-Net over the stacked triplanes [B, 3*C, R, R]
    unet_channels: int = 128
    unet_mult: list = field(default_factory=lambda: [1, 2, 2, 4, 4])
    unet_blocks: int = 2
    unet_attention: list = field(default_factory=lambda: [32, 16, 8])
    unet_dropout: float = 0.0


@dataclass
class DiffusionConfig:
    limits: ClassVar[dict[str, Range]] = {
        "num_steps": at_least(1), "snr_power": Range(), "weight": at_least(0),
        "sample_steps": at_least(1), "clip_x0": at_least(0)}
    schedule: str = "linear"        # DDPM linear betas
    num_steps: int = 1000
    parameterization: str = "v"
    snr_power: float = 0.5          # omega: x0-space loss weight snr**omega
    weight: float = 4.0             # c_diff (lambda)
    sampler: str = "ddim"           # ddim | ode (DPM-Solver++ 2M)
    sample_steps: int = 50
    clip_x0: float = 0.0            # > 0: clamp x0 to [-clip_x0, clip_x0] at every sampling
    #                                 step (the reference: 2 = code_scale); 0: no clipping


@dataclass
class LossConfig:
    limits: ClassVar[dict[str, Range]] = {
        "render_weight": at_least(0), "reg_weight": at_least(0), "tv_weight": at_least(0),
        "rays_per_object": at_least(1), "norm_momentum": between(0, 1),
        "freeze_norm_after": at_least(0)}
    render_weight: float = 20.0     # pixel MSE
    reg_weight: float = 3e-3        # L2 on latents (mean of squares)
    tv_weight: float = 0.0          # total variation on latents (our addition, off by default)
    rays_per_object: int = 1024
    scaling: str = "plain"          # plain (ours) | reference (DDPMMSELossMod + pixel scale)
    norm_momentum: float = 1e-3     # reference scaling: momentum of the running mean of x0**2
    freeze_norm_after: int = 0      # reference scaling: the running mean stops updating from
    #                                 this step (the reference's uncond configs: 100k); 0 = never


@dataclass
class OptimConfig:
    limits: ClassVar[dict[str, Range]] = {
        "batch_objects": at_least(1), "latent_lr": positive(), "latent_init_std": at_least(0),
        "decoder_lr": positive(), "unet_lr": positive(), "stage1_steps": at_least(0),
        "warmup": at_least(0), "warmup_ratio": between(0, 1), "inner_steps": at_least(1)}
    batch_objects: int = 8
    latent_lr: float = 1e-2
    latent_init_std: float = 0.0
    decoder_lr: float = 1e-3
    unet_lr: float = 1e-4
    warmup: int = 0                 # steps of linear warm-up of the decoder and U-Net lr (the
    #                                 reference: 500 from warmup_ratio 0.001; 0 = none)
    warmup_ratio: float = 1e-3
    inner_steps: int = 1            # K_in: latent Adam steps per step (the reference: 16, with
    #                                 one diffusion backward, its latent gradient cached)
    inner_steps_after: list = field(default_factory=list)  # [[step, K], ...] (ref: [[2000, 4]])
    cache_path: str = ""            # "" = latents in RAM; else a folder (relative, inside
    #                                 train.out_dir; stored relative) of file-backed tensors
    mode: str = "single"            # single | two_stage
    stage1_steps: int = 0           # two_stage: steps that fit latents + decoder only

    def validate(self) -> None:
        for pair in self.inner_steps_after:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2
                    and all(isinstance(v, int) for v in pair) and pair[0] >= 0 and pair[1] >= 1):
                raise invalid("inner_steps_after", f"must be [[step >= 0, K >= 1], ...], got "
                                                   f"{self.inner_steps_after!r}")
        if self.mode not in ("single", "two_stage"):
            raise invalid("mode", f"must be 'single' or 'two_stage', got {self.mode!r}")
        p = Path(self.cache_path)
        if self.cache_path and (p.is_absolute() or ".." in p.parts):
            raise invalid("cache_path", f"must be a folder inside train.out_dir (relative, "
                                        f"without '..'), got {self.cache_path!r}")


@dataclass
class ReconConfig:
    limits: ClassVar[dict[str, Range]] = {
        "guidance_scale": at_least(0), "guidance_steps": at_least(1),
        "guidance_rays": at_least(0), "finetune_steps": at_least(0), "finetune_lr": positive(),
        "finetune_prior_weight": at_least(0), "guidance_snr_power": Range(),
        "finetune_prior_every": at_least(1), "finetune_lr_decay": between(0, 1, lo_open=True),
        "finetune_reg_weight": at_least(0), "finetune_rays": at_least(0)}
    guidance_scale: float = 1.0     # step size of the rendering-loss gradient on x0_hat
    guidance_wrt: str = "x0"        # "x0": step on x0_hat; "xt": gradient through the denoiser
    guidance_steps: int = 50        # DDIM steps of guided sampling
    guidance_rays: int = 0          # rays per guidance step (0 = all observed pixels)
    guidance_snr_power: float = -1.0   # < 0: the steps above; omega >= 0: the reference's
    #                                     x0 step scale * sigma^(2-2w) * alpha^(2w-1) * grad
    guidance_loss: str = "sum"      # sum: sum of squares / 2 over rays; reference: the
    #                                 training loss (render_weight * pixel scale * MSE + reg)
    finetune_steps: int = 100
    finetune_lr: float = 1e-2
    finetune_prior_weight: float = 1.0  # weight of the diffusion prior while fine-tuning
    finetune_prior_every: int = 1   # Adam steps per prior gradient (the reference: 4, cached)
    finetune_lr_decay: float = 1.0  # lr factor per Adam step (the reference: 0.998)
    finetune_reg_weight: float = 0.0    # mean(code^2) weight (the reference: 3e-3)
    finetune_rays: int = 2048       # rays per Adam step (0 = all observed pixels)
    seed: int = 0

    def validate(self) -> None:
        if self.guidance_loss not in ("sum", "reference"):
            raise invalid("guidance_loss", f"must be sum or reference, got "
                                           f"{self.guidance_loss!r}")


@dataclass
class SSDNeRFConfig:
    data: MultiViewDataConfig = field(default_factory=MultiViewDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    recon: ReconConfig = field(default_factory=ReconConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/ssdnerf"))

    def validate(self) -> None:
        d, m = self.diffusion, self.model
        if d.parameterization not in ("eps", "x0", "v"):
            raise invalid("diffusion.parameterization",
                          f"must be eps, x0 or v, got {d.parameterization!r}")
        if d.sampler not in ("ddim", "ode", "dpmpp2m", "ddpm"):
            raise invalid("diffusion.sampler",
                          f"must be ddim, ode, dpmpp2m or ddpm, got {d.sampler!r}")
        if d.sample_steps > d.num_steps:
            raise invalid("diffusion.sample_steps", f"must be <= diffusion.num_steps "
                                                    f"({d.num_steps}), got {d.sample_steps}")
        for key, value, allowed in (("model.decoder", m.decoder, ("mlp", "view_sh")),
                                    ("model.plane_aggregate", m.plane_aggregate,
                                     ("sum", "concat")),
                                    ("model.code_activation", m.code_activation,
                                     ("none", "tanh")),
                                    ("model.sampler", m.sampler, ("stratified", "occupancy")),
                                    ("loss.scaling", self.loss.scaling, ("plain", "reference"))):
            if value not in allowed:
                raise invalid(key, f"must be one of {', '.join(allowed)}, got {value!r}")
        check_box("model.aabb", m.aabb)
        check_length("model.background", m.background, 3)


__all__ = ["ModelConfig", "DiffusionConfig", "LossConfig", "OptimConfig",
           "ReconConfig", "SSDNeRFConfig",
           "tiny_config"]


def tiny_config(data_root: str, out_dir: str, **train_kw) -> SSDNeRFConfig:
    """A seconds-scale configuration (tiny toy data, 8x8 planes) for smoke tests."""
    from neural3d.train import TrainConfig

    tc = dict(steps=4, seed=0, out_dir=str(out_dir), log_every=1, ckpt_every=0,
              progress=False, tensorboard=False)
    tc.update(train_kw)
    return SSDNeRFConfig(
        data=MultiViewDataConfig(root=str(data_root), toy=True, toy_objects=4, toy_views=4,
                        toy_test_objects=2, toy_test_views=6, toy_res=16),
        model=ModelConfig(plane_channels=2, plane_res=8, decoder_hidden=16, decoder_layers=1,
                          n_samples=8, unet_channels=8, unet_mult=[1, 2], unet_blocks=1,
                          unet_attention=[]),
        diffusion=DiffusionConfig(num_steps=100, sample_steps=3),
        loss=LossConfig(rays_per_object=32),
        optim=OptimConfig(batch_objects=2, latent_lr=0.05, decoder_lr=1e-2, unet_lr=1e-3),
        recon=ReconConfig(guidance_steps=3, finetune_steps=2),
        train=TrainConfig(**tc))
