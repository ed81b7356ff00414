"""Experiment configs of the 2D diffusion models (YAML files ``configs/diffusion_*.yaml``).

Plain dataclasses read by :func:`neural3d.config.load_config`; ``train`` is the shared trainer's
:class:`~neural3d.train.TrainConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from neural3d.config import Range, at_least, between, positive
from neural3d.train import TrainConfig


@dataclass
class DataConfig:
    limits: ClassVar[dict[str, Range]] = {
        "objects": at_least(1), "views": at_least(1), "res": between(4, 4096),
        "supersample": between(1, 16)}
    root: str = "data/toy_diffusion"   # toy renders are written here when missing
    categories: list[str] = field(default_factory=lambda: ["cars", "chairs"])  # label = index
    objects: int = 32                   # training objects per category
    views: int = 24                     # views per object
    res: int = 32                       # image resolution (the model's)
    supersample: int = 2                # anti-aliasing of the toy renderer
    seed: int = 0


@dataclass
class KaleidoConfig:
    """Kaleido's latent: k-means ids of the ``cells x cells`` cells of the image average-pooled
    to ``pool x pool``, and its autoregressive prior p(z|c)."""
    clusters: int = 16
    pool: int = 4
    cells: int = 2
    kmeans_iters: int = 50
    prior_dim: int = 64
    prior_depth: int = 2
    prior_heads: int = 4
    prior_weight: float = 1.0           # joint loss = diffusion + prior_weight * prior CE
    latent_image: bool = False          # ours: the U-Net also reads z's centroid image as
    #                                     input channels (the paper: z as tokens only)


@dataclass
class DartConfig:
    """DART: ``steps`` non-Markovian steps (= network calls when sampling) matched to the
    diffusion schedule; the transformer uses the DiT keys ``patch, dim, depth, heads``."""
    steps: int = 16
    history_mask: str = "block_causal"  # block_causal | block_diagonal (history-masked)
    token_ar: bool = False              # DART-AR: tokens one at a time within a step (causal)


@dataclass
class CascadeConfig:
    """Cascaded diffusion (Ho et al. 2021): a base model at ``base_res`` (the U-Net keys of
    ``model``) and a super-resolution model at ``data.res`` (the ``sr_*`` U-Net keys)
    conditioned on the upsampled low-resolution image, noised with Gaussian conditioning
    augmentation at level ``s`` (a time of the diffusion schedule; the SR model gets ``s`` as
    an input). CDM/Imagen draw ``s`` uniformly at training and pick the sampling level by a
    sweep; ``aug_max`` and ``sample_aug`` are our toy choices, not a paper's numbers."""
    limits: ClassVar[dict[str, Range]] = {
        "base_res": at_least(4), "sr_channels": at_least(1), "sr_channel_mult": at_least(1),
        "sr_num_res_blocks": at_least(1), "sr_attention_resolutions": at_least(1),
        "sr_shift": positive(), "aug_max": between(0, 1), "sample_aug": between(0, 1),
        "base_fraction": between(0, 1, lo_open=True, hi_open=True)}
    base_res: int = 32
    sr_channels: int = 32
    sr_channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2, 2])
    sr_num_res_blocks: int = 1
    sr_attention_resolutions: list[int] = field(default_factory=lambda: [8])
    sr_shift: float = 1.0               # resolution shift of the SR model's schedule
    aug_max: float = 0.5                # training: s ~ U[0, aug_max]
    sample_aug: float = 0.1             # sampling: the level the base sample is noised to
    base_fraction: float = 0.5          # share of the sampling steps spent on the base model


@dataclass
class LatentConfig:
    """Latent diffusion (Rombach et al. 2022): a KL-regularised autoencoder (downsampling
    ``factor``, ``latent_channels``; L1 reconstruction + ``kl_weight`` KL, optionally a patch
    discriminator) trained for the first ``ae_steps`` steps, then the diffusion U-Net of
    ``model`` on its latents divided by their std, measured once on the training set at the
    stage switch and stored in the checkpoint. Defaults follow LDM's KL-f4 autoencoder
    (f = 4, 3 latent channels, KL weight 1e-6); LDM adds LPIPS to L1, which we leave out (its
    weights are not available offline)."""
    limits: ClassVar[dict[str, Range]] = {
        "factor": at_least(1), "latent_channels": at_least(1), "ae_channels": at_least(1),
        "ae_blocks": at_least(1), "ae_steps": at_least(0), "kl_weight": at_least(0),
        "disc_weight": at_least(0), "disc_start": at_least(0), "disc_channels": at_least(1)}
    factor: int = 4
    latent_channels: int = 3
    ae_channels: int = 32
    ae_blocks: int = 1                  # ResNet blocks per autoencoder resolution
    ae_steps: int = 1000                # stage 1 steps (autoencoder); then stage 2 (diffusion)
    kl_weight: float = 1e-6
    discriminator: bool = False         # PatchGAN hinge loss (off by default)
    disc_weight: float = 0.5
    disc_start: int = 0                 # stage-1 step at which the discriminator turns on
    disc_channels: int = 32


@dataclass
class ModelConfig:
    limits: ClassVar[dict[str, Range]] = {
        "channels": at_least(1), "channel_mult": at_least(1), "num_res_blocks": at_least(1),
        "attention_resolutions": at_least(1), "dropout": between(0, 1, hi_open=True),
        "patch": at_least(1), "dim": at_least(1), "depth": at_least(1), "heads": at_least(1),
        "mdm_resolutions": at_least(1), "shell_channels": at_least(1),
        "shell_blocks": at_least(1), "mdm_loss_weights": at_least(0), "grow_at": at_least(0),
        "fdm_stages": at_least(1), "mdm_shift_power": at_least(0)}
    architecture: str = "unet"          # unet | dit | mdm | fdm | kaleido | dart | cascade | latent
    # U-Net (also the inner U-Net of mdm, the f-DM denoiser, the cascade's base model and the
    # latent model's denoiser)
    channels: int = 64
    channel_mult: list[int] = field(default_factory=lambda: [1, 2, 2])
    num_res_blocks: int = 2
    attention_resolutions: list[int] = field(default_factory=lambda: [8])
    dropout: float = 0.0
    # DiT
    patch: int = 2
    dim: int = 256
    depth: int = 6
    heads: int = 4
    # Matryoshka Diffusion: resolutions high -> low (the first must equal data.res)
    mdm_resolutions: list[int] = field(default_factory=lambda: [64, 32])
    shell_channels: list[int] = field(default_factory=lambda: [32])
    shell_blocks: int = 1
    # per-resolution loss weights, high to low; 1:1 as ml-mdm's two-level 256 config (its
    # three-level 1024 config uses 16:4:1)
    mdm_loss_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])
    # p of snr_l = snr * (R_low / R_l)^p: 2 as ml-mdm's 1024 config (schedule_shifted_power)
    # and simple diffusion; ml-mdm's 256 config uses 1
    mdm_shift_power: float = 2.0
    # progressive training: the lowest level alone until grow_at[0], then one more level per
    # entry; [] trains all levels jointly from the start
    grow_at: list[int] = field(default_factory=list)
    # f-DM
    fdm_stages: int = 3
    fdm_transform: str = "downsample"   # downsample | blur
    kaleido: KaleidoConfig = field(default_factory=KaleidoConfig)   # U-Net + latent z
    dart: DartConfig = field(default_factory=DartConfig)
    cascade: CascadeConfig = field(default_factory=CascadeConfig)
    latent: LatentConfig = field(default_factory=LatentConfig)


@dataclass
class DiffusionConfig:
    limits: ClassVar[dict[str, Range]] = {
        "num_steps": at_least(0), "shift": positive(), "min_snr_gamma": positive(),
        "snr_power": Range(), "cond_drop": between(0, 1)}
    schedule: str = "cosine"            # cosine | linear
    num_steps: int = 0                  # 0 = continuous time, N = discrete table of N steps
    shift: float = 1.0                  # resolution shift (snr / shift^2)
    parameterization: str = "v"         # eps | x0 | v   (f-DM always predicts x0)
    weighting: str = "native"           # native | eps | v | x0 | min_snr | snr_pow (x0-space)
    min_snr_gamma: float = 5.0
    snr_power: float = 0.5              # the omega of "snr_pow" (SSDNeRF's snr ** omega)
    cond_drop: float = 0.1              # label dropout to the null label (CFG training)


@dataclass
class OptimConfig:
    limits: ClassVar[dict[str, Range]] = {
        "lr": positive(), "batch": at_least(1), "weight_decay": at_least(0),
        "warmup": at_least(0)}
    lr: float = 2e-4
    batch: int = 32
    weight_decay: float = 0.0
    warmup: int = 100


@dataclass
class SampleConfig:
    limits: ClassVar[dict[str, Range]] = {"steps": at_least(1), "cfg": Range()}
    sampler: str = "ddim"
    steps: int = 50
    cfg: float = 3.0


@dataclass
class DiffusionExperiment:
    name: str = "diffusion_toy"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=2000, out_dir="runs/diffusion_toy", log_every=20, ema_decay=0.999,
        grad_clip=1.0))
    sample: SampleConfig = field(default_factory=SampleConfig)
