"""Configuration of NerfDiff (dataclasses <-> YAML, see :mod:`neural3d.config`).

Paper facts (Gu et al., ICML 2023) we follow: a U-Net maps the input view to a camera-aligned
triplane; a small MLP decodes the summed plane features; the conditional diffusion model (CDM)
is a U-Net that denoises the target view with the NeRF's render of that view concatenated to its
input, trained with 10 % condition dropout, without gradient into the NeRF; NGD at test time
(``ngd`` section). Sizes here are ours (the paper's are in ``configs/nerfdiff_srn_*.yaml``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from neural3d.config import Range, at_least, between, check_box, check_length, invalid, positive
from neural3d.methods.multiview import MultiViewDataConfig
from neural3d.train import TrainConfig


@dataclass
class ModelConfig:
    limits: ClassVar[dict[str, Range]] = {
        "plane_channels": at_least(1), "encoder_channels": at_least(1),
        "encoder_mult": at_least(1), "encoder_blocks": at_least(1),
        "encoder_attention": at_least(1), "decoder_hidden": at_least(1),
        "decoder_layers": at_least(0), "decoder_coords": at_least(0), "aabb": Range(),
        "depth_radius": positive(), "n_samples": at_least(1), "n_importance": at_least(0),
        "background": between(0, 1)}
    plane_channels: int = 16        # per plane; planes are at the input image's resolution
    input_colour: bool = False      # ours: 3 more channels, the input view's RGB on the
    #                                 pixel-aligned plane (zeros on the others), so the decoder
    #                                 reads the observed colour at each point's projection
    # image encoder (the shared diffusion U-Net, run at t = 0): input view -> 3 * C channels
    encoder_channels: int = 32
    encoder_mult: list = field(default_factory=lambda: [1, 2, 2])
    encoder_blocks: int = 1
    encoder_attention: list = field(default_factory=list)
    decoder_hidden: int = 64
    decoder_layers: int = 2
    # ours: the decoder also reads the positional encoding (this many frequencies) of each
    # point's frustum coordinates, as pixelNeRF's MLP reads the point in the input camera's
    # frame; 0 = the paper's decoder (summed plane features only)
    decoder_coords: int = 0
    density_activation: str = "trunc_exp"
    aabb: list = field(default_factory=lambda: [-0.5, -0.5, -0.5, 0.5, 0.5, 0.5])
    # frustum depth range around the input camera's distance d to the origin: [d - r, d + r]
    depth_radius: float = 0.87      # the toy/SRN box's half diagonal
    n_samples: int = 32
    n_importance: int = 0
    background: list = field(default_factory=lambda: [1.0, 1.0, 1.0])


@dataclass
class CDMConfig:
    limits: ClassVar[dict[str, Range]] = {
        "channels": at_least(1), "mult": at_least(1), "blocks": at_least(1),
        "attention": at_least(1), "dropout": between(0, 1, hi_open=True),
        "cond_dropout": between(0, 1), "weight": at_least(0), "batch": at_least(1),
        "start_step": at_least(0), "cached_pairs": at_least(0)}
    channels: int = 32
    mult: list = field(default_factory=lambda: [1, 2, 2])
    blocks: int = 1
    attention: list = field(default_factory=list)
    dropout: float = 0.0
    schedule: str = "cosine"
    parameterization: str = "v"
    cond_dropout: float = 0.1       # the paper's 10 % (classifier-free guidance)
    condition_on_input: bool = False  # also concatenate the input view (not pixel-aligned)
    # our option: with parameterization x0, predict the clean view as the condition's render
    # plus the network's output (the untrained CDM returns the NeRF render instead of noise)
    residual: bool = False
    weight: float = 1.0             # 0 = no CDM (a single-image NeRF only)
    batch: int = 4                  # target views per step (a full render each, no grad)
    start_step: int = 0             # steps that train the NeRF alone before the CDM joins
    # 0: from start_step on, NeRF and CDM train jointly (the paper); n > 0: from start_step on
    # the NeRF is frozen and the CDM trains alone on n (input, target) view pairs per training
    # object whose conditions are rendered once (our cheaper schedule for small machines)
    cached_pairs: int = 0


@dataclass
class OptimConfig:
    limits: ClassVar[dict[str, Range]] = {
        "batch_objects": at_least(1), "rays_per_object": at_least(1), "lr": positive(),
        "cdm_lr": positive()}
    batch_objects: int = 4
    rays_per_object: int = 512      # rays of the object's views (the input view included)
    lr: float = 5e-4                # encoder + decoder
    cdm_lr: float = 5e-4


@dataclass
class NGDConfig:
    """Test time (``reconstruct``): the NeRF from the input view, then one of
    :data:`neural3d.methods.nerfdiff.distill.MODES` over ``views`` virtual views."""

    limits: ClassVar[dict[str, Range]] = {
        "views": at_least(1), "steps": at_least(1), "t_start": between(0, 1, lo_open=True),
        "gamma": between(0, 1), "guidance_scale": at_least(0), "finetune_steps": at_least(0),
        "lr": positive(), "rays_per_view": at_least(1), "anchor_weight": at_least(0),
        "elevations": between(-90, 90)}
    views: int = 8                  # virtual views N on an orbit at the input's distance
    elevations: list = field(default_factory=lambda: [15.0, 45.0])  # cycled over the views
    steps: int = 10                 # DDIM steps from t_start to 0
    t_start: float = 0.6            # start from the render noised to this time
    gamma: float = 0.3              # NGD blend weight of the NeRF render
    guidance_scale: float = 1.5     # classifier-free guidance of the CDM (1 = plain conditional)
    finetune_steps: int = 4         # M Adam steps on the triplanes per DDIM step
    lr: float = 1e-2
    rays_per_view: int = 1024       # rays drawn per virtual view per Adam step
    anchor_weight: float = 1.0      # weight of the input view's MSE while fine-tuning
    seed: int = 0


@dataclass
class NerfDiffConfig:
    data: MultiViewDataConfig = field(default_factory=lambda: MultiViewDataConfig(
        root="outputs/data/toy_nerfdiff", toy=True, toy_objects=64, toy_res=64))
    model: ModelConfig = field(default_factory=ModelConfig)
    cdm: CDMConfig = field(default_factory=CDMConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    ngd: NGDConfig = field(default_factory=NGDConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(out_dir="runs/nerfdiff"))

    def validate(self) -> None:
        m, c = self.model, self.cdm
        check_box("model.aabb", m.aabb)
        check_length("model.background", m.background, 3)
        if m.density_activation not in ("trunc_exp", "softplus", "relu"):
            raise invalid("model.density_activation",
                          f"must be trunc_exp, softplus or relu, got {m.density_activation!r}")
        if c.schedule not in ("cosine", "linear"):
            raise invalid("cdm.schedule", f"must be cosine or linear, got {c.schedule!r}")
        if c.parameterization not in ("eps", "x0", "v"):
            raise invalid("cdm.parameterization",
                          f"must be eps, x0 or v, got {c.parameterization!r}")
        if c.residual and c.parameterization != "x0":
            raise invalid("cdm.residual", f"needs cdm.parameterization x0, got "
                                          f"{c.parameterization!r}")
        if not self.ngd.elevations:
            raise invalid("ngd.elevations", "needs at least one elevation")


def tiny_config(data_root: str, out_dir: str, **train_kw) -> NerfDiffConfig:
    """A seconds-scale configuration (tiny toy data at 16 px, small networks) for tests."""
    tc = dict(steps=4, seed=0, out_dir=str(out_dir), log_every=1, ckpt_every=0,
              progress=False, tensorboard=False)
    tc.update(train_kw)
    return NerfDiffConfig(
        data=MultiViewDataConfig(root=str(data_root), toy=True, toy_objects=4, toy_views=4,
                                 toy_test_objects=2, toy_test_views=6, toy_res=16),
        model=ModelConfig(plane_channels=4, encoder_channels=8, encoder_mult=[1, 2],
                          decoder_hidden=16, decoder_layers=1, n_samples=8),
        cdm=CDMConfig(channels=8, mult=[1, 2], batch=2),
        optim=OptimConfig(batch_objects=2, rays_per_object=32, lr=1e-3, cdm_lr=1e-3),
        ngd=NGDConfig(views=2, steps=2, finetune_steps=1, rays_per_view=32),
        train=TrainConfig(**tc))
