"""Single-object fitting: one field fitted to the posed views of one object or scene.

``fit_object(train, eval_views, cfg, out)`` trains a :mod:`neural3d.fields` field with the shared
:class:`~neural3d.train.Trainer` and writes ``metrics.json``, ``renders.png``, a turntable video
and a checkpoint. Speed on CPUs comes from where the samples go, not from the network:

- the scene box is tightened to the **visual hull** of the training views (pixels that match the
  background carve space away), and an **occupancy grid** inside it (hull ∩ cells whose density
  is above a threshold, refreshed every few steps) decides which samples are evaluated at all;
- rays march with a fixed step through occupied cells only and are composited **packed**
  (:func:`neural3d.render.composite_packed`, the fused C++/CUDA kernel when available);
- ray batches come from all training pixels that see the box, with foreground-weighted sampling
  early on; white (explicit) background compositing; Adam with a higher learning rate on the
  triplanes and TV regularisation on them; exponential LR decay.

The checkpoint (``OUT/checkpoints/last.pt``) stores the model (field + occupancy grid) and, under
``record``, everything needed to rebuild it (:func:`load_fit_model`): used by ``neural3d render``
and ``neural3d export-mesh``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neural3d.config import from_dict, to_dict
from neural3d.export.media import write_image_rows, write_video
from neural3d.fields import FieldConfig, TriplaneFieldConfig, build_field
from neural3d.render import (
    OccupancyGridSampler,
    RendererConfig,
    VolumeRenderer,
    grid_bounds,
    near_far_aabb,
    render_image,
    visual_hull,
)


@dataclass
class FitConfig:
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


# ----------------------------------------------------------------------------------- model
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
        sigma, _ = self.field(pts[None], None)
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


def model_record(model: FitModel, cfg: FitConfig, cams, extra: dict | None = None) -> dict:
    c = cams
    centers = c.centers
    radius = float(centers.norm(dim=-1).mean())
    elev = torch.rad2deg(torch.asin((centers[:, 2] / centers.norm(dim=-1)).clamp(-1, 1)))
    rec = {
        "method": "fit", "fit_config": to_dict(cfg), "field": to_dict(model.field_config),
        "aabb": model.grid.aabb.tolist(),
        "grid_res": model.grid.res, "step": model.step,
        "background": model.background.tolist(),
        "camera": {"width": c.width, "height": c.height, "fx": float(c.fx[0]),
                   "fy": float(c.fy[0]), "cx": float(c.cx[0]), "cy": float(c.cy[0]),
                   "radius": radius, "elevation_deg": float(elev.median())},
    }
    rec.update(extra or {})
    return rec


def load_fit_model(path: str | Path, ema: bool = False) -> tuple[FitModel, dict]:
    """Rebuild a fitted model from ``neural3d fit``'s checkpoint (``weights_only`` load)."""
    from neural3d.train import load_checkpoint

    ckpt = load_checkpoint(path)
    rec = ckpt.get("record") or {}
    if rec.get("method") != "fit":
        raise RuntimeError(f"{path} is not a checkpoint written by 'neural3d fit'")
    model = FitModel(record_field_config(rec), torch.tensor(rec["aabb"]),
                     rec["grid_res"], None, rec["step"], tuple(rec["background"]))
    state = ckpt["ema"]["module"] if ema and ckpt.get("ema") else ckpt["model"]
    model.load_state_dict(state)
    return model.eval(), rec


def record_field_config(rec: dict) -> FieldConfig:
    """The field config of a checkpoint record: ``"field": {"kind": ..., keys}``, or the older
    ``"field": kind, "field_kwargs": {...}`` (all keys, defaults merged in)."""
    field = rec["field"]
    if isinstance(field, str):
        field = {"kind": field, **rec.get("field_kwargs", {})}
    return from_dict(FieldConfig, field, prefix="record.field")


# ----------------------------------------------------------------------------------- setup
def initial_aabb(cams, data_path: str | None) -> torch.Tensor:
    """A box that surely holds the object: the toy dataset's recorded AABB when the data comes
    from ``neural3d.data.toy``, else a cube scaled from the camera distances (the hull then
    tightens it)."""
    if data_path:
        for parent in list(Path(data_path).resolve().parents)[:3]:
            meta = parent / "toy_dataset.json"
            if meta.is_file():
                lo, hi = json.loads(meta.read_text())["aabb"]
                box = torch.tensor(lo + hi, dtype=torch.float32)
                mid, half = (box[:3] + box[3:]) / 2, (box[3:] - box[:3]) / 2 * 1.1
                return torch.cat([mid - half, mid + half])
    half = 0.6 * float(cams.centers.norm(dim=-1).min())
    return torch.tensor([-half] * 3 + [half] * 3)


def _param_groups(model: FitModel, cfg: FitConfig) -> list[dict]:
    """The field's groups: networks at ``cfg.lr``, tables (triplanes, hash grids) at
    ``cfg.plane_lr``. The occupancy grid has no parameters."""
    return model.field.param_groups(cfg.lr, cfg.plane_lr)


def split_views(data, every: int):
    idx = list(range(len(data)))
    held = idx[::every] if len(idx) > 1 else []
    train = [i for i in idx if i not in held]
    return data.select(train), data.select(held) if held else None


# ----------------------------------------------------------------------------------- fit
def fit_object(train, eval_views, cfg: FitConfig, out_dir: str | Path, resume: str = "",
               progress: bool = True, log=print, time_budget: float | None = None
               ) -> dict[str, Any]:
    """Fit ``train`` (a :class:`~neural3d.data.MultiViewObject`), evaluate on ``eval_views``
    (or None), write the outputs under ``out_dir``; returns the metrics dict.

    ``time_budget`` (seconds) stops training early (at a step boundary, then checkpointed).
    """
    from neural3d.train import TrainConfig, Trainer

    t_start = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    cams = train.cameras
    V, H, W, _ = train.images.shape
    bg = torch.as_tensor(train.background, dtype=torch.float32)
    box0 = torch.as_tensor(cfg.aabb, dtype=torch.float32) if cfg.aabb else initial_aabb(
        cams, train.path)
    hull = visual_hull(train.images, cams, bg, box0, res=cfg.grid_res, masks=train.masks)
    box = grid_bounds(hull, box0, margin_cells=2) if not cfg.aabb else box0
    hull = visual_hull(train.images, cams, bg, box, res=cfg.grid_res, masks=train.masks)
    diag = float((box[3:] - box[:3]).norm())
    n_steps = cfg.samples_per_ray or int(min(max(1.5 * max(H, W), 96), 256))
    step = diag / n_steps
    model = FitModel(cfg.field, box, cfg.grid_res, hull, step,
                     tuple(train.background))
    log(f"box {[round(x, 3) for x in box.tolist()]}, hull occupies "
        f"{float(hull.float().mean()) * 100:.1f}% of {cfg.grid_res}^3 cells, "
        f"step {step:.4f} ({n_steps} across the diagonal)")

    # all rays that see the box, with their colours and a foreground flag
    o, d = cams.pixel_rays()
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    rgb = train.images.reshape(-1, 3)
    _, _, hit = near_far_aabb(o, d, box)
    o, d, rgb = o[hit], d[hit], rgb[hit]
    fg_idx = ((rgb - bg).abs().amax(-1) > 0.03).nonzero()[:, 0]
    n_rays = o.shape[0]

    opt = torch.optim.Adam(_param_groups(model, cfg), betas=(0.9, 0.99), eps=1e-15)
    gamma = cfg.lr_final_ratio ** (1.0 / max(cfg.steps, 1))
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma)
    tcfg = TrainConfig(steps=cfg.steps, seed=cfg.seed, out_dir=str(out), log_every=cfg.log_every,
                       ckpt_every=cfg.ckpt_every, ema_decay=cfg.ema_decay,
                       eval_every=cfg.eval_every,
                       grad_clip=cfg.grad_clip, progress=progress, resume=resume)
    trainer = Trainer(model, opt, tcfg, scheduler=sched,
                      record=model_record(model, cfg, cams, {"data": train.path}))
    g_rays = trainer.generator("rays")
    g_grid = trainer.generator("grid")
    resumed = trainer.maybe_resume()
    if resumed:
        log(f"resumed from {trainer.ckpt_path} at step {trainer.step}")
    thresh = -math.log(1 - cfg.grid_alpha) / step
    fg_until = int(cfg.fg_steps * cfg.steps)
    deadline = None if time_budget is None else t_start + time_budget
    stats = {"occupied": float(model.grid.occ.float().mean())}

    def step_fn(it: int) -> dict[str, torch.Tensor]:
        if it >= cfg.grid_warmup and it % cfg.grid_every == 0:
            stats["occupied"] = model.grid.update(model.density, thresh, g_grid)
        R = cfg.rays
        if it < fg_until and fg_idx.numel() > 0:
            n_fg = int(R * cfg.fg_fraction)
            sel = torch.cat([fg_idx[torch.randint(0, fg_idx.numel(), (n_fg,), generator=g_rays)],
                             torch.randint(0, n_rays, (R - n_fg,), generator=g_rays)])
        else:
            sel = torch.randint(0, n_rays, (R,), generator=g_rays)
        jitter = torch.rand(R, generator=g_rays)
        res = model.render_rays(o[sel], d[sel], jitter)
        mse = ((res["rgb"] - rgb[sel]) ** 2).mean()
        loss = mse + sum(model.field.regularizers().values())
        return {"loss": loss, "mse": mse.detach(), "psnr": -10 * torch.log10(mse.detach()),
                "samples_per_ray": res["samples"] / R,
                "occupied": torch.tensor(stats["occupied"])}

    curve: list[dict[str, float]] = []
    eval_clock = {"spent": 0.0}

    def eval_fn(it: int) -> dict[str, Any]:
        if eval_views is None or len(eval_views) == 0:
            return {}
        t0 = time.time()
        train_clock = t0 - t_start - eval_clock["spent"]
        model.eval()
        n = min(len(eval_views), cfg.eval_views_max)
        with torch.no_grad():
            pred = torch.stack([model.render_image(eval_views.cameras[i], cfg.chunk)
                                for i in range(n)])
        model.train()
        from neural3d.metrics import psnr

        p = float(psnr(pred, eval_views.images[:n]))
        eval_clock["spent"] += time.time() - t0
        curve.append({"step": it, "seconds": round(train_clock, 2), "psnr": p})
        return {"psnr_heldout": p, "render": torch.cat([eval_views.images[0], pred[0]], 1)}

    stop = None if deadline is None else (
        lambda it: time.time() - eval_clock["spent"] > deadline)
    trainer.fit(step_fn, stop_fn=stop, eval_fn=eval_fn if cfg.eval_every else None)
    if trainer.stopped_early:
        log(f"time budget of {time_budget:.0f} s reached at step {trainer.step}")
    train_seconds = time.time() - t_start - eval_clock["spent"]
    backend = None
    model.eval()
    metrics: dict[str, Any] = {"field": cfg.field.kind, "steps": trainer.step,
                               "stopped_by_time_budget": trainer.stopped_early,
                               "train_seconds": round(train_seconds, 2)}
    with torch.no_grad():
        tm: dict = {}
        model.render_rays(o[:64], d[:64], timings=tm)
        backend = tm.get("backend")
    if eval_views is not None and len(eval_views) > 0:
        from neural3d.metrics import evaluate_views

        preds = torch.stack([model.render_image(eval_views.cameras[i], cfg.chunk)
                             for i in range(len(eval_views))])
        metrics.update(evaluate_views(preds, eval_views.images))
        metrics["eval_views"] = len(eval_views)
        save_renders_png(out / "renders.png", eval_views.images, preds)
    else:
        metrics.update({"psnr": None, "ssim": None, "lpips": None,
                        "lpips_reason": "no held-out views"})
    metrics["seconds"] = round(time.time() - t_start, 2)
    if curve:
        metrics["curve"] = curve
    metrics["backend"] = backend
    metrics["train_views"] = V
    metrics["resolution"] = [H, W]
    metrics["final_train_psnr"] = trainer.history[-1].get("psnr") if trainer.history else None
    rec = model_record(model, cfg, cams)["camera"]
    if cfg.turntable_frames > 0:
        video = write_turntable(out / "turntable.mp4", model, rec, cfg.turntable_frames,
                                cfg.chunk)
        metrics["turntable"] = str(video)
    metrics["checkpoint"] = str(trainer.ckpt_path)
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    trainer.close()
    return metrics


# ----------------------------------------------------------------------------------- outputs
def save_renders_png(path: Path, truth: torch.Tensor, pred: torch.Tensor, max_rows: int = 8
                     ) -> Path:
    """Rows of ``truth | render | error (|diff| x 4)`` for up to ``max_rows`` views."""
    n = min(len(truth), max_rows)
    rows = []
    for i in range(n):
        err = ((truth[i] - pred[i]).abs().mean(-1, keepdim=True) * 4).clamp(0, 1).expand(-1, -1, 3)
        rows.append(torch.stack([truth[i], pred[i], err]))
    return write_image_rows(path, rows)


def path_cameras(rec: dict, kind: str = "orbit", n: int = 48, width: int | None = None):
    """Cameras on an orbit (turntable) or the SRN-style spiral around the origin, with the
    intrinsics of the training cameras (optionally rescaled to ``width``)."""
    from neural3d.cameras import Cameras, orbit_path, spiral_path

    elev = float(min(max(rec.get("elevation_deg", 20.0), 10.0), 60.0))
    if kind == "orbit":
        c2w = orbit_path(n, radius=rec["radius"], elevation_deg=elev)
    elif kind == "spiral":
        c2w = spiral_path(n, radius=rec["radius"], turns=1.0, min_elevation_deg=5.0,
                          max_elevation_deg=75.0)
    else:
        raise ValueError(f"unknown camera path {kind!r} (orbit, spiral)")
    cams = Cameras(c2w, rec["fx"], rec["fy"], rec["cx"], rec["cy"], rec["width"], rec["height"])
    if width is not None and width != rec["width"]:
        cams = cams.scaled(width, round(rec["height"] * width / rec["width"]))
    return cams


@torch.no_grad()
def write_turntable(path: Path, model: FitModel, cam_rec: dict, frames: int = 48,
                    chunk: int = 8192, kind: str = "orbit", width: int | None = None) -> Path:
    cams = path_cameras(cam_rec, kind, frames, width)
    imgs = [model.render_image(cams[i], chunk) for i in range(len(cams))]
    return write_video(path, imgs)
