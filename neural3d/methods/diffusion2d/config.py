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


@dataclass
class DartConfig:
    """DART: ``steps`` non-Markovian steps (= network calls when sampling) matched to the
    diffusion schedule; the transformer uses the DiT keys ``patch, dim, depth, heads``."""
    steps: int = 16
    history_mask: str = "block_causal"  # block_causal | block_diagonal (history-masked)


@dataclass
class ModelConfig:
    limits: ClassVar[dict[str, Range]] = {
        "channels": at_least(1), "channel_mult": at_least(1), "num_res_blocks": at_least(1),
        "attention_resolutions": at_least(1), "dropout": between(0, 1, hi_open=True),
        "patch": at_least(1), "dim": at_least(1), "depth": at_least(1), "heads": at_least(1),
        "mdm_resolutions": at_least(1), "shell_channels": at_least(1),
        "shell_blocks": at_least(1), "mdm_loss_weights": at_least(0), "grow_at": at_least(0),
        "fdm_stages": at_least(1)}
    architecture: str = "unet"          # unet | dit | mdm | fdm | kaleido | dart
    # U-Net (also the inner U-Net of mdm and the f-DM denoiser)
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
    mdm_loss_weights: list[float] = field(default_factory=lambda: [1.0, 1.0])
    grow_at: list[int] = field(default_factory=list)   # progressive training steps
    # f-DM
    fdm_stages: int = 3
    fdm_transform: str = "downsample"   # downsample | blur
    kaleido: KaleidoConfig = field(default_factory=KaleidoConfig)   # U-Net + latent z
    dart: DartConfig = field(default_factory=DartConfig)


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
