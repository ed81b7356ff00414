"""``Neural3DModel``: a nerfstudio ``Model`` whose whole render path is ours.

nerfstudio's ``RayBundle`` (origins, unit directions, optional nears/fars from a collider) goes
straight into :class:`neural3d.render.VolumeRenderer` with one of our fields
(:class:`~neural3d.fields.TriplaneField`, :class:`~neural3d.fields.HashGridField`,
:class:`~neural3d.fields.MLPNeRF`), the same renderer and sampler as ``neural3d fit``: ray/AABB
bounds, then by default empty-space skipping with an
:class:`~neural3d.render.OccupancyGridSampler` (fixed steps through occupied cells, packed
samples, the grid refreshed from the field's density on fit's schedule by a training callback),
or stratified (+ optional importance) samples when ``occupancy_grid=False``; compositing by
:func:`neural3d.render.composite` / :func:`~neural3d.render.composite_packed` (the fused
C++/CUDA kernel when available, else the torch reference). The field's box is the dataparser's
scene box; the background is explicit (the dataparser's, white for SRN/ABO).

nerfstudio's contracts: outputs ``rgb [R,3]``, ``accumulation [R,1]``, ``depth [R,1]`` (expected
termination distance along the ray, divided by the accumulation as nerfstudio does); training
metric ``psnr``; ``get_image_metrics_and_images`` gives ``psnr`` and ``ssim`` (our
:mod:`neural3d.metrics`, scikit-image-matching SSIM) and the ``img``/``accumulation``/``depth``
images; the viewer path is the inherited ``get_outputs_for_camera_ray_bundle`` (chunks of
``eval_num_rays_per_chunk``). LPIPS is left out: its backbone weights are downloaded at run time,
which fails offline, and we never report LPIPS without the real weights.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from neural3d.integrations.nerfstudio import require_nerfstudio

require_nerfstudio()

import torch  # noqa: E402
import tyro  # noqa: E402
from nerfstudio.cameras.rays import RayBundle  # noqa: E402
from nerfstudio.engine.callbacks import (  # noqa: E402
    TrainingCallback,
    TrainingCallbackAttributes,
    TrainingCallbackLocation,
)
from nerfstudio.models.base_model import Model, ModelConfig  # noqa: E402
from nerfstudio.utils import colormaps  # noqa: E402
from torch.nn import Parameter  # noqa: E402

from neural3d.fields import FIELD_CONFIGS, FieldConfig, build_field  # noqa: E402
from neural3d.metrics.image import psnr as image_psnr  # noqa: E402
from neural3d.metrics.image import psnr_from_mse, ssim  # noqa: E402
from neural3d.render import OccupancyGridSampler, RendererConfig, VolumeRenderer  # noqa: E402

#: the field's parameter groups -> nerfstudio's optimiser groups (learning rates: methods.py)
NS_GROUPS = {"networks": "fields", "tables": "planes"}
#: the plugin's field defaults by kind: ``neural3d fit``'s (TV 1e-2 on triplanes included: the
#: plugin renders with fit's occupancy-grid sampler too)
PLUGIN_FIELDS: dict[str, FieldConfig] = {kind: cls() for kind, cls in FIELD_CONFIGS.items()}

if TYPE_CHECKING:
    FieldChoice = FieldConfig
else:  # for nerfstudio's CLI (tyro): one subcommand per kind, pipeline.model.field:KIND
    FieldChoice = tyro.extras.subcommand_type_from_defaults(PLUGIN_FIELDS)


def plugin_field_config(kind: str) -> FieldConfig:
    """A fresh copy of the plugin's defaults for field ``kind`` (unknown kinds: a
    :class:`~neural3d.config.ConfigError` listing the kinds)."""
    FieldConfig.kind_class(kind, "field")
    return dataclasses.replace(PLUGIN_FIELDS[kind])


@dataclass
class Neural3DModelConfig(ModelConfig):
    """A neural3d field rendered by the neural3d volume renderer."""

    _target: type = field(default_factory=lambda: Neural3DModel)
    enable_collider: bool = False
    """Rays are bounded by the scene box (ray/AABB test); a collider's near/far, if enabled,
    further clips them."""
    field: FieldChoice = dataclasses.field(
        default_factory=lambda: plugin_field_config("triplane"))
    """The neural3d field (any kind of :mod:`neural3d.fields`) and its settings, regulariser
    weights included; defaults: ``PLUGIN_FIELDS``."""
    # rendering
    occupancy_grid: bool = True
    """Empty-space skipping as in ``neural3d fit``: march fixed steps through the occupied cells
    of an occupancy grid over the scene box (then ``num_samples``/``num_importance`` do not
    apply). Unlike fit there is no visual hull: the grid starts with every cell occupied and the
    box is not tightened, because the model is built before it sees images and nerfstudio's
    datasets carry no per-image background masks. Cells are carved from the density alone, on
    fit's rule: the density EMA starts at 1e3 and decays by 0.8 per refresh, so nothing is carved
    before some 35 refreshes (about step 700 with the defaults), where fit has its hull from the
    start."""
    grid_res: int = 64
    """Occupancy grid cells per axis (fit: ``grid_res``)."""
    grid_every: int = 16
    """Grid refresh interval in steps (fit: ``grid_every``)."""
    grid_warmup: int = 128
    """First grid refresh (fit: ``grid_warmup``)."""
    grid_alpha: float = 0.005
    """A cell stays occupied while one step through it has opacity above this (fit:
    ``grid_alpha``)."""
    samples_per_ray: int = 192
    """March steps across the scene box diagonal. fit derives it from the image size (1.5 x the
    larger side within [96, 256]: 192 for 128-pixel SRN views) and its tightened box; the model is
    built before it sees an image, so a fixed 192 over the scene box."""
    num_samples: int = 64
    """Stratified samples per ray inside the scene box (``occupancy_grid=False`` only)."""
    num_importance: int = 0
    """Extra importance samples per ray from a no-grad coarse pass (0 = off;
    ``occupancy_grid=False`` only)."""
    background: tuple[float, float, float] | None = None
    """Background colour; None = the dataparser's (neural3d-srn: white), else white."""
    backend: Literal["auto", "torch", "cpp", "cuda"] = "auto"
    """Compositing backend (auto: CUDA kernel on GPU, C++ kernel on CPU, torch fallback)."""
    eval_num_rays_per_chunk: int = 8192


class Neural3DModel(Model):
    """nerfstudio model around a neural3d field and :class:`~neural3d.render.VolumeRenderer`."""

    config: Neural3DModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()  # the collider, only when enabled
        cfg = self.config
        aabb = self.scene_box.aabb.reshape(-1).tolist()
        self.field = build_field(cfg.field, aabb, device=self.kwargs.get("device"))
        meta = self.kwargs.get("metadata") or {}
        bg = cfg.background if cfg.background is not None else meta.get(
            "neural3d_background", (1.0, 1.0, 1.0))
        self.register_buffer("background", torch.tensor(bg, dtype=torch.float32),
                             persistent=False)
        self.renderer = VolumeRenderer(RendererConfig(
            n_samples=cfg.num_samples, n_importance=cfg.num_importance, aabb=tuple(aabb),
            background=tuple(float(c) for c in bg),
            backend=None if cfg.backend == "auto" else cfg.backend))
        self.grid: OccupancyGridSampler | None = None
        if cfg.occupancy_grid:
            if cfg.num_importance > 0:
                raise ValueError("neural3d: num_importance needs occupancy_grid=False (the "
                                 "occupancy grid places all samples)")
            if cfg.samples_per_ray < 1:
                raise ValueError(f"neural3d: samples_per_ray must be >= 1, got "
                                 f"{cfg.samples_per_ray}")
            box = self.scene_box.aabb.reshape(-1).float()
            step = float((box[3:] - box[:3]).norm()) / cfg.samples_per_ray
            self.grid = OccupancyGridSampler(box, cfg.grid_res, step=step)
            self._grid_generator = torch.Generator().manual_seed(0)

    def density(self, points: torch.Tensor) -> torch.Tensor:
        """Field density at ``points [N, 3]`` -> ``[N]`` (the grid's update input)."""
        sigma, _ = self.field(points[None], None)
        return sigma[0]

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes
                               ) -> list[TrainingCallback]:
        """Before each training step: the occupancy grid's refresh on fit's schedule
        (``grid_warmup``, ``grid_every``, ``grid_alpha``)."""
        callbacks = list(super().get_training_callbacks(training_callback_attributes))
        if self.grid is None:
            return callbacks
        cfg = self.config

        def update_grid(step: int) -> None:
            self.grid.update_every_n_steps(step, self.density, self._grid_generator,
                                           every=cfg.grid_every, warmup=cfg.grid_warmup,
                                           alpha=cfg.grid_alpha)

        return callbacks + [TrainingCallback(
            where_to_run=[TrainingCallbackLocation.BEFORE_TRAIN_ITERATION],
            update_every_num_iters=1, func=update_grid)]

    # ------------------------------------------------------------------ optimisation
    def get_param_groups(self) -> dict[str, list[Parameter]]:
        """The field's groups under nerfstudio's names: ``planes``, its tables (triplanes /
        hash tables: big, sparse updates); ``fields``, its networks. Empty groups are left out
        (nerfstudio builds one optimiser per group)."""
        return {NS_GROUPS[g["name"]]: g["params"] for g in self.field.param_groups()
                if g["params"]}

    # ------------------------------------------------------------------ rendering
    def get_outputs(self, ray_bundle: RayBundle) -> dict[str, torch.Tensor]:
        batch_shape = tuple(ray_bundle.origins.shape[:-1])
        origins = ray_bundle.origins.reshape(-1, 3)
        directions = ray_bundle.directions.reshape(-1, 3)
        near, far, _ = self.renderer.bounds(origins, directions)
        if ray_bundle.nears is not None:
            near = torch.maximum(near, ray_bundle.nears.reshape(-1).to(near))
        if ray_bundle.fars is not None:
            far = torch.minimum(far, ray_bundle.fars.reshape(-1).to(far))
        far = torch.maximum(far, near)
        out = self.renderer(self.field, origins, directions, sampler=self.grid, near=near,
                            far=far, background=self.background)
        acc = out["opacity"][:, None]
        depth = out["depth"][:, None] / acc.clamp_min(1e-6)
        outputs = {"rgb": out["rgb"], "accumulation": acc, "depth": depth}
        return {k: v.reshape(*batch_shape, v.shape[-1]) for k, v in outputs.items()}

    def gt_rgb(self, image: torch.Tensor) -> torch.Tensor:
        """Ground truth on our background (RGBA images are composited, RGB kept)."""
        image = image.to(self.device)
        if image.shape[-1] == 4:
            alpha = image[..., 3:]
            return image[..., :3] * alpha + self.background * (1.0 - alpha)
        return image[..., :3]

    def get_rgba_image(self, outputs: dict[str, torch.Tensor], output_name: str = "rgb"
                       ) -> torch.Tensor:
        """Un-composited colour and alpha (for nerfstudio's exporters/viewer)."""
        rgb = outputs[output_name]
        acc = outputs[output_name.replace("rgb", "accumulation")]
        straight = (rgb - (1.0 - acc) * self.background) / acc.clamp_min(1e-6)
        return torch.cat([straight.clamp(0.0, 1.0), acc], dim=-1)

    # ------------------------------------------------------------------ losses, metrics
    def get_metrics_dict(self, outputs, batch) -> dict[str, torch.Tensor]:
        gt = self.gt_rgb(batch["image"])
        mse = torch.mean((outputs["rgb"].detach() - gt) ** 2)
        return {"psnr": psnr_from_mse(mse)}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> dict[str, torch.Tensor]:
        gt = self.gt_rgb(batch["image"])
        losses = {"rgb_loss": torch.mean((outputs["rgb"] - gt) ** 2)}
        if self.training:
            losses.update({f"{k}_loss": v for k, v in self.field.regularizers().items()})
        return losses

    def get_image_metrics_and_images(self, outputs, batch
                                     ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        gt = self.gt_rgb(batch["image"])
        rgb = outputs["rgb"].clamp(0.0, 1.0)
        acc = outputs["accumulation"]
        metrics = {"psnr": float(image_psnr(rgb, gt)), "ssim": float(ssim(rgb, gt))}
        images = {
            "img": torch.cat([gt, rgb], dim=1),
            "accumulation": colormaps.apply_colormap(acc),
            "depth": colormaps.apply_depth_colormap(outputs["depth"], accumulation=acc),
        }
        return metrics, images


__all__ = ["Neural3DModel", "Neural3DModelConfig"]
