"""Configuration of pixelNeRF-lite (dataclasses <-> YAML, see :mod:`neural3d.config`).

Paper facts (Yu et al., CVPR 2021, and its public configs ``conf/default*.conf``,
``train/train.py``): image features from a ResNet34 (conv1 + layer1-3, upsampled to the first
map's H/2 x W/2 and concatenated, 512 channels); positional encoding of the point in the input
view's camera frame (6 frequencies, ``freq_factor`` 1.5, input included) plus the raw view
direction in that frame; ResNet-FC MLPs with 5 blocks of hidden 512, the image feature added
through a linear layer before each of the first ``combine_layer = 3`` blocks, views averaged
there; ReLU density, sigmoid colour; separate coarse and fine MLPs, 64 coarse + 32 fine samples;
batches of 4 objects x 128 rays drawn from all views of each object (the input view included);
Adam, lr 1e-4; loss MSE(coarse) + MSE(fine). Our own choices are marked in the field comments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from neural3d.config import Range, at_least, between, check_box, invalid, positive
from neural3d.methods.multiview import MultiViewDataConfig
from neural3d.train import TrainConfig

DENSITY_ACTIVATIONS = ("relu", "softplus", "trunc_exp")


@dataclass
class ModelConfig:
    limits: ClassVar[dict[str, Range]] = {
        "encoder_channels": at_least(1), "mlp_hidden": at_least(1), "mlp_blocks": at_least(1),
        "combine_layer": at_least(0), "pos_freqs": at_least(0), "freq_factor": positive(),
        "n_samples": at_least(1), "n_importance": at_least(0), "aabb": Range()}
    # encoder: a 7x7 stride-2 stem (H/2) then one stride-2 residual block per further entry;
    # every map upsampled to H/2 x W/2 and concatenated (paper: ResNet34, 64-64-128-256)
    encoder_channels: list = field(default_factory=lambda: [64, 64, 128, 256])
    mlp_hidden: int = 512
    mlp_blocks: int = 5
    combine_layer: int = 3          # feature added before blocks < combine_layer; views averaged
    pos_freqs: int = 6
    freq_factor: float = 1.5        # encoding frequencies freq_factor * 2^k (paper)
    density_activation: str = "relu"
    separate_fine: bool = True      # a second ResNet-FC for the fine pass (paper); false: one
    #                                 network, the coarse pass only places samples (no loss)
    n_samples: int = 64             # stratified coarse samples per ray
    n_importance: int = 32          # fine samples from the coarse weights (0 = coarse only)
    aabb: list = field(default_factory=lambda: [-0.5, -0.5, -0.5, 0.5, 0.5, 0.5])

    def validate(self) -> None:
        if not self.encoder_channels:
            raise invalid("encoder_channels", "needs at least one entry")
        if self.combine_layer > self.mlp_blocks:
            raise invalid("combine_layer", f"must be <= model.mlp_blocks ({self.mlp_blocks}), "
                                           f"got {self.combine_layer}")
        if self.density_activation not in DENSITY_ACTIVATIONS:
            raise invalid("density_activation", f"must be one of {', '.join(DENSITY_ACTIVATIONS)}"
                                                f", got {self.density_activation!r}")
        check_box("aabb", self.aabb)


@dataclass
class LossConfig:
    limits: ClassVar[dict[str, Range]] = {
        "batch_objects": at_least(1), "rays_per_object": at_least(1),
        "coarse_weight": at_least(0), "fine_weight": at_least(0)}
    batch_objects: int = 4
    rays_per_object: int = 128
    coarse_weight: float = 1.0      # lambda_coarse (only with model.separate_fine)
    fine_weight: float = 1.0        # lambda_fine


@dataclass
class OptimConfig:
    limits: ClassVar[dict[str, Range]] = {"lr": positive(), "beta2": between(0, 1, hi_open=True)}
    lr: float = 1e-4
    beta2: float = 0.999


@dataclass
class PixelNeRFConfig:
    data: MultiViewDataConfig = field(default_factory=MultiViewDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/pixelnerf"))


__all__ = ["DENSITY_ACTIVATIONS", "LossConfig", "ModelConfig", "OptimConfig", "PixelNeRFConfig",
           "tiny_config"]


def tiny_config(data_root: str, out_dir: str, **train_kw) -> PixelNeRFConfig:
    """A seconds-scale configuration (tiny toy data, 16 px, small nets) for smoke tests."""
    tc = dict(steps=4, seed=0, out_dir=str(out_dir), log_every=1, ckpt_every=0,
              progress=False, tensorboard=False)
    tc.update(train_kw)
    return PixelNeRFConfig(
        data=MultiViewDataConfig(root=str(data_root), toy=True, toy_objects=4, toy_views=4,
                                 toy_test_objects=2, toy_test_views=6, toy_res=16),
        model=ModelConfig(encoder_channels=[8, 8], mlp_hidden=16, mlp_blocks=2, combine_layer=1,
                          pos_freqs=2, n_samples=8, n_importance=4),
        loss=LossConfig(batch_objects=2, rays_per_object=32),
        optim=OptimConfig(lr=1e-3),
        train=TrainConfig(**tc))
