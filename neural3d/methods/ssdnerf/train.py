"""SSDNeRF training through the shared :class:`~neural3d.train.Trainer`.

One step (single-stage, the paper's method): draw ``batch_objects`` training objects, fetch their
latents from the cache, and minimise

    render_weight * MSE(render(latents, random rays), pixels)
    + c_diff * L_diff(latents)            # gradient flows into the latents
    + reg_weight * mean(latents^2) + tv_weight * TV(latents)

over the decoder, the U-Net and the batch's latents (per-object Adam in the cache).
``optim.mode = two_stage`` is the baseline: for ``stage1_steps`` the latents and decoder are fitted
with the rendering loss while the U-Net learns from *detached* latents; afterwards the latents and
decoder are frozen and only the U-Net trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from neural3d.cameras import Cameras, rays_for_pixels
from neural3d.fields import tv_loss
from neural3d.methods.ssdnerf.config import DataConfig, SSDNeRFConfig
from neural3d.methods.ssdnerf.latents import LatentAdam, LatentCache
from neural3d.methods.ssdnerf.model import SSDNeRFModel
from neural3d.metrics.image import psnr_from_mse


# ----------------------------------------------------------------------------------- data
def ensure_data(dc: DataConfig) -> Path:
    """The dataset root; the toy set is written there first when ``dc.toy`` and it is missing."""
    if not dc.toy:
        return Path(dc.root)
    from neural3d.data.toy import ensure_toy_dataset

    return ensure_toy_dataset(dc.root, dc.category, lambda m: print(f"[ssdnerf] {m}", flush=True),
                              objects=dc.toy_objects, views=dc.toy_views,
                              test_views=dc.toy_test_views, res=dc.toy_res, seed=dc.toy_seed,
                              test_objects=dc.toy_test_objects)


@dataclass
class MultiObjectSet:
    """All views of several objects: ``images [M,H,W,3]``, ``cameras`` (M), per-object
    ``offsets``/``counts`` into them, ``object_ids``."""

    images: torch.Tensor
    cameras: Cameras
    offsets: torch.Tensor
    counts: torch.Tensor
    object_ids: list[str]

    def __len__(self) -> int:
        return len(self.object_ids)

    def views(self, i: int) -> tuple[torch.Tensor, Cameras]:
        a, n = int(self.offsets[i]), int(self.counts[i])
        idx = torch.arange(a, a + n)
        return self.images[a:a + n], self.cameras[idx]

    @staticmethod
    def from_objects(objs) -> MultiObjectSet:
        counts = torch.tensor([len(o) for o in objs])
        offsets = torch.cumsum(counts, 0) - counts
        return MultiObjectSet(torch.cat([o.images for o in objs]),
                              Cameras.cat([o.cameras for o in objs]), offsets, counts,
                              [o.object_id for o in objs])


def load_split(dc: DataConfig, split: str, max_objects: int | None = None) -> MultiObjectSet:
    from neural3d.data import SRNCategory

    cat = SRNCategory(ensure_data(dc), dc.category, split, resolution=dc.resolution or None)
    return MultiObjectSet.from_objects(cat.load(max_objects or None))


# ----------------------------------------------------------------------------------- build
def build(cfg: SSDNeRFConfig, num_objects: int, device: str | torch.device = "cpu",
          seed: int | None = None):
    """``(model, cache, optimizers)``; optimizers is ``{"main": Adam, "latents": LatentAdam}``."""
    torch.manual_seed(cfg.train.seed if seed is None else seed)
    model = SSDNeRFModel(cfg).to(device)
    g = torch.Generator().manual_seed(cfg.train.seed + 17)
    cache = LatentCache(num_objects, model.latent_shape, cfg.optim.latent_init_std,
                        path=cfg.optim.cache_path or None, generator=g, root=cfg.train.out_dir)
    main = torch.optim.Adam([
        {"params": list(model.field.parameters()), "lr": cfg.optim.decoder_lr},
        {"params": list(model.unet.parameters()), "lr": cfg.optim.unet_lr}])
    return model, cache, {"main": main, "latents": LatentAdam(cache, cfg.optim.latent_lr)}


def make_step_fn(trainer, model: SSDNeRFModel, latopt: LatentAdam, data: MultiObjectSet,
                 cfg: SSDNeRFConfig):
    """The ``step_fn(step)`` of one SSDNeRF training step (see the module docstring)."""
    rank, world = trainer.rank, trainer.world_size
    g_batch = trainer.generator("ssdnerf/objects")          # same on all ranks -> shard
    g_rays = trainer.generator("ssdnerf/rays", per_rank=True)
    g_noise = trainer.generator("ssdnerf/noise", per_rank=True)
    N = len(data)
    B, R = cfg.optim.batch_objects, cfg.loss.rays_per_object
    H, W = data.images.shape[1:3]
    dev = trainer.device
    two = cfg.optim.mode == "two_stage"
    lw = cfg.loss

    def step_fn(step: int) -> dict[str, Any]:
        if N >= B * world:
            idx = torch.randperm(N, generator=g_batch)[:B * world][rank::world]
        else:
            idx = torch.randint(0, N, (B * world,), generator=g_batch)[rank::world]
        stage2 = two and step >= cfg.optim.stage1_steps
        latopt.frozen = stage2
        lat = latopt.fetch(idx, dev)
        out: dict[str, Any] = {}
        if not stage2:
            view = (torch.rand(len(idx), R, generator=g_rays) * data.counts[idx, None]).long()
            cam = data.offsets[idx, None] + view
            px = torch.randint(0, W, (len(idx), R), generator=g_rays)
            py = torch.randint(0, H, (len(idx), R), generator=g_rays)
            o, d = rays_for_pixels(data.cameras, cam.reshape(-1), px.reshape(-1) + 0.5,
                                   py.reshape(-1) + 0.5)
            tgt = data.images[cam, py, px].to(dev)
            o, d = o.reshape(len(idx), R, 3).to(dev), d.reshape(len(idx), R, 3).to(dev)
        else:
            o = d = tgt = None
        diff_in = lat if cfg.optim.mode == "single" else lat.detach()
        if cfg.diffusion.weight <= 0 and not two:
            diff_in = None
        parts = trainer.model(lat, o, d, tgt, diff_in, g_noise)
        loss = torch.zeros((), device=dev)
        if "render_mse" in parts:
            loss = loss + lw.render_weight * parts["render_mse"]
            out["render_mse"] = parts["render_mse"].detach()
            out["psnr"] = psnr_from_mse(parts["render_mse"].detach())
        if "diffusion" in parts:
            w = cfg.diffusion.weight if cfg.diffusion.weight > 0 else 1.0
            loss = loss + w * parts["diffusion"]
            out["diffusion"] = parts["diffusion"].detach()
        if not stage2:
            reg = lat.pow(2).mean()
            loss = loss + lw.reg_weight * reg
            out["latent_l2"] = reg.detach()
            if lw.tv_weight > 0:
                tv = tv_loss(lat)
                loss = loss + lw.tv_weight * tv
                out["latent_tv"] = tv.detach()
        out["loss"] = loss
        return out

    return step_fn


def train(cfg: SSDNeRFConfig, device: str | torch.device | None = "auto",
          steps: int | None = None):
    """Train SSDNeRF (:func:`neural3d.methods.training.train_method`); returns the trainer
    (its ``out_dir`` holds ``checkpoints/last.pt``)."""
    from neural3d.device import resolve_device
    from neural3d.methods.ssdnerf.method import SSDNeRF
    from neural3d.methods.training import train_method

    trainer, _ = train_method(SSDNeRF(cfg, resolve_device(device)), steps=steps)
    return trainer


def load_ssdnerf(path: str | Path, device: str | torch.device = "cpu", ema: bool | str = "auto"):
    """The :class:`~neural3d.methods.ssdnerf.method.SSDNeRF` method of a checkpoint (model with
    EMA weights per :func:`neural3d.methods.registry.use_ema`, training latents)."""
    from neural3d.methods.registry import load

    return load(path, device, ema, method="ssdnerf")
