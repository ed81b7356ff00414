"""The fitted scene: a field plus its occupancy grid, rendered through the shared renderer."""

from __future__ import annotations

import torch
from torch import nn

from neural3d.config import from_dict
from neural3d.fields import FieldConfig, build_field
from neural3d.render import OccupancyGridSampler, RendererConfig, VolumeRenderer, render_image


class FitModel(nn.Module):
    """A field plus its occupancy grid (``grid``, an :class:`OccupancyGridSampler`), rendered
    by a :class:`VolumeRenderer` with the grid's packed samples and an explicit background."""

    def __init__(self, field: FieldConfig, aabb: torch.Tensor, grid_res: int,
                 hull: torch.Tensor | None, step: float, background=(1.0, 1.0, 1.0)):
        super().__init__()
        self.field_config = field
        self.field = build_field(field, aabb)
        self.grid = OccupancyGridSampler(aabb, grid_res, hull, step=float(step))
        self.renderer = VolumeRenderer(RendererConfig(aabb=tuple(self.grid.aabb.tolist())))
        self.step = float(step)
        self.register_buffer("background", torch.as_tensor(background, dtype=torch.float32))

    def density(self, pts: torch.Tensor) -> torch.Tensor:
        """Density ``[P]`` at ``pts [P, 3]`` (a view-dependent field is asked along +z: its
        density does not depend on the direction)."""
        up = torch.zeros_like(pts)
        up[:, 2] = 1
        sigma, _ = self.field(pts[None], up[None])
        return sigma[0]

    def render_rays(self, origins: torch.Tensor, dirs: torch.Tensor,
                    jitter: torch.Tensor | None = None, timings: dict | None = None
                    ) -> dict[str, torch.Tensor]:
        """Rays ``[R, 3]`` -> ``rgb [R, 3]``, ``opacity [R]``, ``depth [R]``, ``samples`` (a
        0-d tensor) and ``backend``. ``jitter [R]`` in [0, 1) shifts each ray's samples
        (training); None: the step midpoints. ``timings`` accumulates the seconds spent in
        ``march``, ``field`` and ``composite``, the ``samples`` and the ``backend``."""
        tm: dict = {}
        out = self.renderer(self.field, origins, dirs, sampler=self.grid,
                            background=self.background,
                            jitter=False if jitter is None else jitter, timings=tm)
        if timings is not None:
            for ours, theirs in (("march", "sample"), ("field", "field"),
                                 ("composite", "composite")):
                timings[ours] = timings.get(ours, 0.0) + tm[theirs]
            timings["samples"] = timings.get("samples", 0) + out["samples"]
            timings["backend"] = out["backend"]
        return {"rgb": out["rgb"], "opacity": out["opacity"], "depth": out["depth"],
                "samples": torch.tensor(float(out["samples"])), "backend": out["backend"]}

    def render_image(self, cams, chunk: int = 8192) -> torch.Tensor:
        """Render one camera (``len(cams) == 1``) -> ``[H, W, 3]`` in [0, 1], on the model's
        device (:func:`neural3d.render.render_image`)."""
        if len(cams) != 1:
            raise ValueError(f"FitModel.render_image renders one camera, got {len(cams)}")
        return render_image(self.renderer, self.field, cams, chunk,
                            device=self.background.device, sampler=self.grid,
                            background=self.background)[0]


def camera_record(cams) -> dict:
    """Intrinsics of the first camera, the mean camera distance and the median elevation: what
    :func:`~neural3d.methods.fit.outputs.path_cameras` needs for turntables of a fitted scene."""
    centers = cams.centers
    elev = torch.rad2deg(torch.asin((centers[:, 2] / centers.norm(dim=-1)).clamp(-1, 1)))
    return {"width": cams.width, "height": cams.height, "fx": float(cams.fx[0]),
            "fy": float(cams.fy[0]), "cx": float(cams.cx[0]), "cy": float(cams.cy[0]),
            "radius": float(centers.norm(dim=-1).mean()), "elevation_deg": float(elev.median())}


def record_field_config(rec: dict) -> FieldConfig:
    """The field config of a checkpoint record: ``"field": {"kind": ..., keys}``, or the older
    ``"field": kind, "field_kwargs": {...}`` (all keys, defaults merged in)."""
    field = rec["field"]
    if isinstance(field, str):
        field = {"kind": field, **rec.get("field_kwargs", {})}
    return from_dict(FieldConfig, field, prefix="record.field")
