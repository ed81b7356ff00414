"""Configuration of the style-based 3D-aware GANs (dataclasses <-> YAML, :mod:`neural3d.config`).

One method, ``stylenerf``, with the generator as a tagged section (``generator: {kind: ...}``):

- ``stylenerf`` — StyleNeRF (Gu et al., ICLR 2022): style-modulated NeRF rendered to features at
  low resolution, a 1x1-conv StyleGAN2 upsampler, the NeRF-path regulariser, progressive
  growing. ``upsampler: bilinear`` is the NeRF-only baseline (the NeRF's RGB bilinearly
  upsampled, no learned 2D layers).
- ``eg3d`` — EG3D's generator (Chan et al., CVPR 2022) on the same parts: a StyleGAN2-lite
  backbone emitting triplanes, the small decoder, low-resolution neural rendering,
  super-resolution and dual discrimination.

Reference facts (facebookresearch/StyleNeRF ``conf/``, NVlabs/eg3d ``train.py``) are cited in
the field comments; our own toy-scale choices say so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal

from neural3d.config import TaggedConfig, invalid
from neural3d.train import TrainConfig

SRN_FOCAL = 131.25 / 128.0   # SRN cars' focal length / image width (fov about 52 degrees)


@dataclass
class DataConfig:
    """Training images, unposed. ``format: srn`` takes every view of ``<category>_train`` of an
    SRN-layout root (poses ignored; the toy set is written first when ``toy`` and missing);
    ``format: folder`` reads a folder of images (:class:`neural3d.data.ImageFolder`). Images are
    resized to the generator's output resolution."""

    root: str = "outputs/data/toy_ssdnerf"
    format: Literal["srn", "folder"] = "srn"
    category: str = "cars"          # srn: <category>_train; also what `eval generation` reads
    max_images: int = 0             # 0 = all
    toy: bool = False
    toy_objects: int = 48
    toy_views: int = 24
    toy_test_objects: int = 8
    toy_test_views: int = 50
    toy_res: int = 32
    toy_seed: int = 0


@dataclass
class CameraConfig:
    """The camera prior: the eye on a sphere of ``radius`` looking at the origin, world up +z.
    Yaw (azimuth from +x) and pitch (elevation) in degrees; ``uniform`` draws in
    ``[min, max]``, ``gaussian`` around the range's centre with std its half-width (StyleNeRF's
    ``gaussian_camera``), ``sphere`` (pitch only) uniform in ``sin(pitch)`` (uniform on the
    sphere's band, the toy generator's and SRN's training views). ``focal``: focal length over
    image width (SRN: 131.25/128)."""

    radius: float = 1.3
    focal: float = SRN_FOCAL
    yaw: Literal["uniform", "gaussian"] = "uniform"
    yaw_range: list = field(default_factory=lambda: [-180.0, 180.0])
    pitch: Literal["uniform", "gaussian", "sphere"] = "sphere"
    pitch_range: list = field(default_factory=lambda: [0.0, 90.0])


@dataclass
class MappingConfig:
    z_dim: int = 64
    w_dim: int = 64
    layers: int = 8                 # StyleGAN2 / StyleNeRF: 8
    lr_mul: float = 0.01            # StyleGAN2: 0.01
    w_avg_beta: float = 0.995       # StyleGAN2
    style_mixing: float = 0.9       # StyleNeRF loss_kwargs.style_mixing_prob


@dataclass
class GeneratorConfig(TaggedConfig):
    """Base of the generator configs (tagged on ``kind``)."""

    kinds: ClassVar[dict[str, type[TaggedConfig]]] = {}
    output_res: int = 32            # final image resolution
    render_res: int = 16            # neural rendering (NeRF) resolution
    n_samples: int = 14             # stratified samples per ray (StyleNeRF ffhq: 14)
    n_importance: int = 14          # importance samples (StyleNeRF: hierarchical, 14)
    aabb: list = field(default_factory=lambda: [-0.5, -0.5, -0.5, 0.5, 0.5, 0.5])
    background: float = 1.0         # white (toy, SRN, EG3D shapenet white_back)

    @property
    def levels(self) -> int:
        """Number of 2x steps from ``render_res`` to ``output_res``."""
        return int(round(math.log2(self.output_res / self.render_res)))

    def validate(self) -> None:
        r, o = self.render_res, self.output_res
        if r < 1 or o < r or r * 2 ** self.levels != o:
            raise invalid("output_res", f"({o}) must be render_res ({r}) times a power of two")
        if len(self.aabb) != 6:
            raise invalid("aabb", "needs 6 numbers")


@GeneratorConfig.register
@dataclass
class StyleNeRFGeneratorConfig(GeneratorConfig):
    kind: ClassVar[str] = "stylenerf"
    nerf_hidden: int = 64           # StyleNeRF NeRFBlock hidden_size 128
    nerf_layers: int = 4            # StyleNeRF n_blocks 8 (toy: 4)
    n_freqs: int = 10               # positional encoding frequencies (StyleNeRF n_freq_posenc)
    features: int = 64              # rendered feature channels (StyleNeRF ffhq rgb_out_dim 256)
    upsampler: Literal["learned", "bilinear"] = "learned"   # bilinear: the NeRF-only baseline
    channels: list = field(default_factory=lambda: [64, 32])  # per upsampler block
    nerf_path_pixels: int = 8       # n: n x n pixels for the regulariser (StyleNeRF: 16)
    nerf_path_weight: float = 2.0   # StyleNeRF: reg_loss * 2.0

    def validate(self) -> None:
        super().validate()
        if self.upsampler == "learned" and len(self.channels) < self.levels:
            raise invalid("channels", f"needs one entry per upsampler block ({self.levels}), "
                                      f"got {self.channels}")


@GeneratorConfig.register
@dataclass
class EG3DGeneratorConfig(GeneratorConfig):
    kind: ClassVar[str] = "eg3d"
    plane_res: int = 32             # EG3D: 256
    plane_channels: int = 16        # EG3D: 32 per plane (backbone emits 96)
    backbone_channels: int = 64     # channels of the StyleGAN2-lite backbone (our toy size)
    decoder_hidden: int = 64        # EG3D OSGDecoder: 64
    features: int = 16              # decoder output (EG3D: 32, the first 3 are raw RGB)
    sr_channels: int = 32           # super-resolution block channels (our toy size)
    decoder_lr_mul: float = 1.0     # EG3D decoder_lr_mul
    dual_discrimination: bool = True


@dataclass
class DiscriminatorConfig:
    channel_base: int = 2048        # channels at res r: min(channel_base // r, channel_max)
    channel_max: int = 128
    mbstd_group: int = 4            # StyleGAN2 minibatch-std group (StyleNeRF paper256: 8)


@dataclass
class LossConfig:
    r1_gamma: float = 1.0           # StyleNeRF paper256: 0.5; EG3D shapenet: 0.3
    r1_interval: int = 16           # lazy R1 every 16 D steps (StyleGAN2)


@dataclass
class OptimConfig:
    batch: int = 16
    lr_g: float = 0.0025            # StyleNeRF paper256 lrate
    lr_d: float = 0.0025
    betas: list = field(default_factory=lambda: [0.0, 0.99])   # StyleGAN2
    ema_kimg: float = 1.0           # G EMA half-life in thousands of images (paper: 20)


@dataclass
class ProgressiveConfig:
    """Growing G and D from ``render_res`` to ``output_res`` (StyleNeRF ``curriculum``, in
    steps here): a global fade ``a = (step - start) / (end - start)`` in [0, 1] over all levels;
    level ``ceil(a * levels)`` is faded in with ``alpha = a * levels - (level - 1)``. Off: the
    full resolution from the start."""

    enabled: bool = True
    start: int = 500                # StyleNeRF: [500, 5000] kimg
    end: int = 5000


@dataclass
class StyleNeRFConfig:
    data: DataConfig = field(default_factory=DataConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    mapping: MappingConfig = field(default_factory=MappingConfig)
    generator: GeneratorConfig = field(default_factory=StyleNeRFGeneratorConfig)
    discriminator: DiscriminatorConfig = field(default_factory=DiscriminatorConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    progressive: ProgressiveConfig = field(default_factory=ProgressiveConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/stylenerf"))

    def validate(self) -> None:
        """Checks across sections (each section's own keys are checked by its limits and
        ``validate()`` through :func:`neural3d.config.validate`)."""
        if self.progressive.enabled and self.generator.kind == "eg3d":
            raise invalid("progressive.enabled", "the eg3d generator trains at its full "
                                                 "resolution (set progressive.enabled=false)")
        if self.progressive.enabled and not self.progressive.end > self.progressive.start:
            raise invalid("progressive.end", "must exceed progressive.start")
        if self.optim.batch % min(self.discriminator.mbstd_group, self.optim.batch):
            raise invalid("optim.batch", f"({self.optim.batch}) must be a multiple of "
                          f"discriminator.mbstd_group ({self.discriminator.mbstd_group})")

    def ema_decay(self) -> float:
        """G's EMA decay per step: half-life ``ema_kimg`` thousand images (StyleGAN2)."""
        return 0.5 ** (self.optim.batch / max(self.optim.ema_kimg * 1000.0, 1e-8))


def tiny_config(data_root: str, out_dir: str, generator: str = "stylenerf", **train_kw
                ) -> StyleNeRFConfig:
    """A seconds-scale configuration (16 px, 4x4 NeRF renders) for tests and smoke runs."""
    tc = dict(steps=4, seed=0, out_dir=str(out_dir), log_every=1, ckpt_every=0, progress=False,
              tensorboard=False)
    tc.update(train_kw)
    if generator == "eg3d":
        gen: GeneratorConfig = EG3DGeneratorConfig(
            output_res=16, render_res=8, n_samples=6, n_importance=4, plane_res=8,
            plane_channels=4, backbone_channels=16, decoder_hidden=16, features=8,
            sr_channels=8)
    else:
        gen = StyleNeRFGeneratorConfig(
            output_res=16, render_res=4, n_samples=6, n_importance=4, nerf_hidden=16,
            nerf_layers=2, n_freqs=4, features=8, channels=[16, 8], nerf_path_pixels=4,
            upsampler="bilinear" if generator == "nerf" else "learned")
    return StyleNeRFConfig(
        data=DataConfig(root=str(data_root), toy=True, toy_objects=4, toy_views=4,
                        toy_test_objects=2, toy_test_views=6, toy_res=16),
        mapping=MappingConfig(z_dim=16, w_dim=16, layers=2),
        generator=gen,
        discriminator=DiscriminatorConfig(channel_base=128, channel_max=16, mbstd_group=2),
        loss=LossConfig(r1_gamma=1.0, r1_interval=2),
        optim=OptimConfig(batch=4, lr_g=2e-3, lr_d=2e-3),
        progressive=ProgressiveConfig(enabled=generator != "eg3d", start=1, end=4),
        train=TrainConfig(**tc))
