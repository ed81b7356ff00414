"""``fit``: one field fitted to the posed views of one object or scene.

Speed on CPUs comes from where the samples go, not from the network:

- the scene box is tightened to the **visual hull** of the training views (pixels that match the
  background carve space away), and an **occupancy grid** inside it (hull ∩ cells whose density
  is above a threshold, refreshed every few steps) decides which samples are evaluated at all;
- rays march with a fixed step through occupied cells only and are composited **packed** by the
  shared :class:`~neural3d.render.VolumeRenderer` (the fused C++/CUDA kernel when available);
- ray batches come from all training pixels that see the box, with foreground-weighted sampling
  early on; white (explicit) background compositing; Adam with a higher learning rate on the
  field's tables (triplanes, hash grids) and the field's own regularisers (the triplane's TV);
  exponential LR decay.

After training, :meth:`Fit.finish` writes ``metrics.json``, ``renders.png`` (held-out truth |
render | error) and ``turntable.mp4`` next to the checkpoint (``OUT/checkpoints/last.pt``), whose
record holds the config and the scene geometry; :func:`neural3d.load` rebuilds it for
``neural3d render`` and ``neural3d export``.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from neural3d.config import Range, at_least, between, invalid, positive
from neural3d.export.media import tile_rows
from neural3d.fields import FieldConfig, TriplaneFieldConfig
from neural3d.methods.fit.model import FitModel, camera_record, record_field_config
from neural3d.methods.fit.outputs import path_cameras, save_renders_png, write_turntable
from neural3d.methods.registry import (
    Built,
    Method,
    MethodError,
    load_weights,
    module_states,
    register_method,
)
from neural3d.render import grid_bounds, near_far_aabb, visual_hull
from neural3d.train.loggers import check_vis


@dataclass
class FitConfig:
    """Single-object fitting (``neural3d fit`` / ``neural3d train fit``)."""

    limits: ClassVar[dict[str, Range]] = {
        "res": at_least(0), "steps": at_least(1), "rays": at_least(1), "lr": positive(),
        "plane_lr": positive(), "lr_final_ratio": between(0, 1, lo_open=True),
        "samples_per_ray": at_least(0), "grid_res": between(2, 1024), "grid_every": at_least(1),
        "grid_warmup": at_least(0), "grid_alpha": between(0, 1, True, True),
        "fg_fraction": between(0, 1), "fg_steps": between(0, 1), "aabb": Range(),
        "eval_every_views": at_least(0), "ema_decay": between(0, 1, hi_open=True),
        "grad_clip": at_least(0), "log_every": at_least(1), "eval_every": at_least(0),
        "eval_views_max": at_least(1), "ckpt_every": at_least(0),
        "turntable_frames": at_least(0), "chunk": at_least(1)}

    data: str = ""              # object folder (SRN layout), Blender scene or transforms.json
    eval_data: str = ""         # held-out views; "" = the layout's own (data/scenes.py)
    res: int = 0                # resize images to res x res (0 = native)
    out_dir: str = "runs/fit"
    resume: str = ""            # "" = a fresh run, "auto" = continue OUT/checkpoints/last.pt
    progress: bool = True
    vis: str = "tensorboard"    # training logs: tensorboard (OUT/tb) | wandb | none
    # the field: any registered kind (YAML `field: {kind: hashgrid, n_levels: 8}` or
    # `field: mlp`; overrides `field.kind=mlp field.hidden=64`); its regularisers (the
    # triplane's TV, `field.tv_weight`) come with it
    field: FieldConfig = dataclasses.field(default_factory=TriplaneFieldConfig)
    steps: int = 1500
    rays: int = 4096
    seed: int = 0
    lr: float = 1e-2            # networks
    plane_lr: float = 3e-2      # triplane planes / hash tables
    lr_final_ratio: float = 0.1  # exponential decay to lr * ratio at the last step
    samples_per_ray: int = 0    # steps across the box diagonal; 0 = auto from the resolution
    grid_res: int = 64          # occupancy grid cells per axis
    grid_every: int = 16        # occupancy refresh interval (steps)
    grid_warmup: int = 128      # first refresh
    grid_alpha: float = 0.005   # a cell is occupied when 1 - exp(-sigma * step) exceeds this
    fg_fraction: float = 0.7    # share of rays drawn from foreground pixels, early
    fg_steps: float = 0.3       # ... for this fraction of the steps
    aabb: list = dataclasses.field(default_factory=list)  # empty: cameras + hull
    eval_every_views: int = 8   # without eval data hold out every N-th view
    ema_decay: float = 0.0
    grad_clip: float = 0.0
    log_every: int = 25
    eval_every: int = 0         # held-out PSNR every N steps (curve in metrics.json); 0 = off
    eval_views_max: int = 8     # ... on at most this many held-out views
    ckpt_every: int = 500
    turntable_frames: int = 48
    chunk: int = 8192           # rays per chunk when rendering images
    overwrite: bool = False     # a fresh run may replace the run in out_dir

    def validate(self) -> None:
        check_vis(self.vis)
        if self.aabb and (len(self.aabb) != 6 or not all(
                lo < hi for lo, hi in zip(self.aabb[:3], self.aabb[3:], strict=True))):
            raise invalid("aabb", f"must be [] or [xmin, ymin, zmin, xmax, ymax, zmax] with "
                                  f"min < max, got {self.aabb}")
        if self.overwrite and self.resume:
            raise invalid("overwrite", f"replaces the run, resume={self.resume!r} continues it: "
                                       "set one of them")




def check_fittable(views) -> None:
    """Refuse training views that hold nothing to fit (a :class:`~neural3d.data.DataError`
    naming the data): every pixel background (alpha zero everywhere, or every colour equal to
    the background), or every view from the same camera position (no parallax)."""
    from neural3d.data import DataError

    where = views.path or views.object_id
    bg = torch.as_tensor(views.background, dtype=torch.float32)
    empty = (views.masks is not None and float(views.masks.max()) == 0.0) or \
        float((views.images - bg).abs().max()) == 0.0
    if empty:
        raise DataError(f"{where}: every pixel of the {len(views)} training views is background "
                        "(alpha is zero everywhere or the images are blank): nothing to fit")
    c = views.cameras.centers
    if len(views) > 1 and float((c - c[0]).norm(dim=-1).max()) <= 1e-6 * max(
            float(c.norm(dim=-1).max()), 1.0):
        raise DataError(f"{where}: all {len(views)} training views share one camera position: "
                        "no parallax to fit a 3D field from")


@register_method
class Fit(Method):
    """Fits ``cfg.field`` to ``train`` views (read from ``cfg.data`` unless given, with the
    held-out views of :func:`neural3d.data.scenes.train_and_heldout`)."""

    name = "fit"
    summary = "one field (triplane, hash grid, MLP) fitted to the posed views of one object"
    Config = FitConfig

    def __init__(self, cfg: FitConfig, device="cpu", train=None, held=None, log=print):
        super().__init__(cfg, device)
        self.train_views, self.held_views, self.log = train, held, log
        self.geometry: dict[str, Any] = {}   # box, grid, step, background, camera, data

    @property
    def model(self) -> FitModel:
        return self.modules["model"]

    def train_config(self):
        from neural3d.train import TrainConfig

        c = self.cfg
        return TrainConfig(steps=c.steps, seed=c.seed, out_dir=c.out_dir, log_every=c.log_every,
                           ckpt_every=c.ckpt_every, ema_decay=c.ema_decay,
                           eval_every=c.eval_every, grad_clip=c.grad_clip, progress=c.progress,
                           resume=c.resume, overwrite=c.overwrite, vis=c.vis)

    # ------------------------------------------------------------------ training
    def _read_data(self) -> None:
        from neural3d.data.scenes import train_and_heldout

        if self.train_views is not None:
            return
        c = self.cfg
        if not c.data:
            from neural3d.config import ConfigError

            raise ConfigError("data: the object to fit is not set (--data or data=PATH)")
        self.train_views, self.held_views, note = train_and_heldout(
            c.data, c.eval_every_views, c.res or None, c.eval_data or None)
        v = self.train_views
        self.log(f"fit: {v.object_id}: {len(v)} training views at {v.images.shape[2]}x"
                 f"{v.images.shape[1]}, {note}; field {c.field.kind}, {c.steps} steps -> "
                 f"{c.out_dir}")

    def build(self) -> Built:
        from neural3d.data.scenes import camera_aabb, scale_aabb, toy_aabb

        self._read_data()
        c, train = self.cfg, self.train_views
        check_fittable(train)
        torch.manual_seed(c.seed)
        cams = train.cameras
        H, W = train.images.shape[1:3]
        bg = torch.as_tensor(train.background, dtype=torch.float32)
        if c.aabb:
            box = torch.as_tensor(c.aabb, dtype=torch.float32)
            hull = visual_hull(train.images, cams, bg, box, res=c.grid_res, masks=train.masks)
        else:
            toy = toy_aabb(train.path)
            box0 = scale_aabb(toy, 1.1) if toy is not None else camera_aabb(cams)
            hull = visual_hull(train.images, cams, bg, box0, res=c.grid_res, masks=train.masks)
            box = grid_bounds(hull, box0, margin_cells=2)
            hull = visual_hull(train.images, cams, bg, box, res=c.grid_res, masks=train.masks)
        n_steps = c.samples_per_ray or int(min(max(1.5 * max(H, W), 96), 256))
        step = float((box[3:] - box[:3]).norm()) / n_steps
        model = FitModel(c.field, box, c.grid_res, hull, step, tuple(train.background))
        self.log(f"box {[round(x, 3) for x in box.tolist()]}, hull occupies "
                 f"{float(hull.float().mean()) * 100:.1f}% of {c.grid_res}^3 cells, "
                 f"step {step:.4f} ({n_steps} across the diagonal)")
        self.geometry = {"aabb": box.tolist(), "grid_res": c.grid_res, "step": step,
                         "background": list(train.background), "camera": camera_record(cams),
                         "data": train.path}
        # all rays that see the box, with their colours and a foreground flag
        o, d = cams.pixel_rays()
        o, d, rgb = o.reshape(-1, 3), d.reshape(-1, 3), train.images.reshape(-1, 3)
        _, _, hit = near_far_aabb(o, d, box)
        dev = self.device
        self.rays = (o[hit].to(dev), d[hit].to(dev), rgb[hit].to(dev))
        self.fg_idx = ((rgb[hit] - bg).abs().amax(-1) > 0.03).nonzero()[:, 0]
        model.to(dev)
        opt = torch.optim.Adam(model.field.param_groups(c.lr, c.plane_lr), betas=(0.9, 0.99),
                               eps=1e-15)
        sched = torch.optim.lr_scheduler.ExponentialLR(
            opt, c.lr_final_ratio ** (1.0 / max(c.steps, 1)))
        return Built({"model": model}, {"main": opt}, sched)

    def record(self) -> dict[str, Any]:
        return {**super().record(), **self.geometry}

    def setup(self, trainer) -> None:
        self.g_rays = trainer.generator("rays")
        self.g_grid = trainer.generator("grid")
        self.occupied: float | None = None  # the grid's share, once the run has (re)started
        self.curve: list[dict[str, float]] = []

    def step(self, trainer, it: int) -> dict[str, torch.Tensor]:
        c, model = self.cfg, self.model
        frac = model.grid.update_every_n_steps(it, model.density, self.g_grid,
                                               every=c.grid_every, warmup=c.grid_warmup,
                                               alpha=c.grid_alpha)
        if frac is not None:
            self.occupied = frac
        elif self.occupied is None:  # first step of this process (a resumed grid included)
            self.occupied = float(model.grid.occ.float().mean())
        o, d, rgb = self.rays
        R, n_rays, fg = c.rays, o.shape[0], self.fg_idx
        if it < int(c.fg_steps * c.steps) and fg.numel() > 0:
            n_fg = int(R * c.fg_fraction)
            sel = torch.cat([fg[torch.randint(0, fg.numel(), (n_fg,), generator=self.g_rays)],
                             torch.randint(0, n_rays, (R - n_fg,), generator=self.g_rays)])
        else:
            sel = torch.randint(0, n_rays, (R,), generator=self.g_rays)
        jitter = torch.rand(R, generator=self.g_rays).to(self.device)
        sel = sel.to(self.device)
        res = model.render_rays(o[sel], d[sel], jitter)
        mse = ((res["rgb"] - rgb[sel]) ** 2).mean()
        loss = mse + sum(model.field.regularizers().values())
        return {"loss": loss, "mse": mse.detach(), "psnr": -10 * torch.log10(mse.detach()),
                "samples_per_ray": res["samples"] / R,
                "occupied": torch.tensor(self.occupied)}

    def _render_views(self, cams, n: int | None = None) -> torch.Tensor:
        n = len(cams) if n is None else n
        return torch.stack([self.model.render_image(cams[i], self.cfg.chunk).cpu()
                            for i in range(n)])

    def evaluate(self, trainer, it: int) -> dict[str, Any]:
        """Held-out PSNR on up to ``eval_views_max`` views every ``eval_every`` steps (the
        ``curve`` of metrics.json, with training seconds) and the first held-out view (truth
        | render) for the logs."""
        held = self.held_views
        if not self.cfg.eval_every or held is None or len(held) == 0:
            return {}
        from neural3d.metrics import psnr

        seconds = self.clock.seconds() if self.clock is not None else 0.0
        pred = self._render_views(held.cameras, min(len(held), self.cfg.eval_views_max))
        p = float(psnr(pred, held.images[:len(pred)]))
        self.curve.append({"step": it, "seconds": round(seconds, 2), "psnr": p})
        return {"psnr_heldout": p, "render": torch.cat([held.images[0], pred[0]], 1)}

    def finish(self, trainer) -> dict[str, Any]:
        """Evaluate all held-out views, write metrics.json, renders.png and the turntable; log
        the held-out metrics and up to 4 views (truth above, render below) under ``final/``."""
        from neural3d.metrics import evaluate_views

        c, model = self.cfg, self.model
        out = Path(c.out_dir)
        if trainer.stopped_early:
            self.log(f"time budget reached at step {trainer.step}")
        model.eval()
        o, d, _ = self.rays
        with torch.no_grad():
            backend = model.render_rays(o[:64], d[:64])["backend"]
        metrics: dict[str, Any] = {"field": c.field.kind, "steps": trainer.step,
                                   "stopped_by_time_budget": trainer.stopped_early,
                                   "train_seconds": round(self.train_seconds, 2)}
        held = self.held_views
        if held is not None and len(held) > 0:
            preds = self._render_views(held.cameras)
            metrics.update(evaluate_views(preds, held.images))
            metrics["eval_views"] = len(held)
            save_renders_png(out / "renders.png", held.images, preds)
            trainer.log_scalars({f"final/{k}_heldout": metrics[k] for k in ("psnr", "ssim",
                                                                             "lpips")
                                 if metrics.get(k) is not None})
            trainer.log_images({"final/heldout": tile_rows(torch.stack([held.images[:4],
                                                                         preds[:4]]), pad=1)})
        else:
            metrics.update({"psnr": None, "ssim": None, "lpips": None,
                            "lpips_reason": "no held-out views"})
        if self.curve:
            metrics["curve"] = self.curve
        metrics.update(backend=backend, device=str(self.device),
                       train_views=len(self.train_views),
                       resolution=list(self.train_views.images.shape[1:3]),
                       final_train_psnr=trainer.history[-1].get("psnr")
                       if trainer.history else None)
        if c.turntable_frames > 0:
            metrics["turntable"] = str(write_turntable(
                out / "turntable.mp4", model, self.geometry["camera"], c.turntable_frames,
                c.chunk))
        metrics["checkpoint"] = str(trainer.ckpt_path)
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        return metrics

    # ------------------------------------------------------------------ loading
    @classmethod
    def config_from_record(cls, record):
        """Reads the older fit records too (``fit_config`` + ``field``/``field_kwargs``)."""
        from neural3d.config import from_dict

        if "config" in record:
            return from_dict(FitConfig, dict(record["config"]))
        old = dict(record["fit_config"])
        old["field"] = record_field_config(record)
        for key in ("field_kwargs", "tv_weight"):
            old.pop(key, None)
        return FitConfig(**{k: v for k, v in old.items()
                            if k in {f.name for f in dataclasses.fields(FitConfig)}})

    @classmethod
    def from_checkpoint(cls, ckpt, device="cpu", ema="auto") -> Fit:
        from neural3d.train.checkpoint import CheckpointError

        rec = ckpt["record"]
        missing = [k for k in ("aabb", "grid_res", "step", "background") if k not in rec]
        if missing:
            raise CheckpointError(f"the fit record has no {', '.join(map(repr, missing))} "
                                  "(the scene geometry)")
        method = cls(cls.config_from_record(rec), device)
        try:
            aabb = torch.tensor(rec["aabb"], dtype=torch.float32).reshape(6)
            geo = int(rec["grid_res"]), float(rec["step"]), tuple(float(c) for c in
                                                                  rec["background"])
        except (TypeError, ValueError, RuntimeError) as exc:
            raise CheckpointError(f"the fit record's geometry (aabb, grid_res, step, "
                                  f"background) is malformed: {exc}") from exc
        if not bool(torch.isfinite(aabb).all()) or bool((aabb[3:] <= aabb[:3]).any()) or \
                not 1 <= geo[0] <= 1024 or not geo[1] > 0 or len(geo[2]) != 3:
            raise CheckpointError(f"the fit record's geometry is invalid: aabb {aabb.tolist()}, "
                                  f"grid_res {geo[0]}, step {geo[1]}, background {geo[2]}")
        model = FitModel(method.cfg.field, aabb, geo[0], None, geo[1], geo[2])
        load_weights(model, module_states(ckpt, ema), "model")
        method.modules = {"model": model.to(method.device).eval()}
        method.geometry = {k: rec[k] for k in ("aabb", "grid_res", "step", "background",
                                                "camera") if k in rec}
        return method

    # ------------------------------------------------------------------ capabilities
    def camera_path(self, kind: str = "orbit", frames: int = 48, width: int | None = None):
        """Cameras on an orbit or the SRN spiral with the training intrinsics."""
        return path_cameras(self.geometry["camera"], kind, frames, width)

    def home_camera(self):
        """The first camera of the orbit (training intrinsics)."""
        return self.camera_path("orbit", 1)

    def render(self, state, cameras) -> torch.Tensor:
        """The fitted scene (``state`` is unused: a fit holds one scene) at ``cameras``."""
        return self._render_views(cameras)

    def export(self, out: Path, res: int = 128, level: float | None = None,
               sample_index: int = 0, seed: int = 0) -> list[Path]:
        """A marching-cubes mesh of the scene with vertex colours, as ``out``'s suffix says
        (PLY, OBJ, GLB). A fit holds one scene: ``sample_index`` must be 0 (``seed`` unused)."""
        from neural3d.export import export_mesh

        if sample_index != 0:
            raise MethodError(f"--sample-index: a fit holds one scene (index 0), got "
                              f"{sample_index}")
        model = self.model

        def colour(p: torch.Tensor) -> torch.Tensor:
            return model.field(p[None], None)[1][0]

        return [export_mesh(out, model.density, colour, model.grid.aabb, res, level)]
