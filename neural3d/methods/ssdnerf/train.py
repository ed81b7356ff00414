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

from pathlib import Path
from typing import Any

import torch

from neural3d.fields import tv_loss
from neural3d.methods.multiview import MultiObjectSet, draw_rays
from neural3d.methods.ssdnerf.config import SSDNeRFConfig
from neural3d.methods.ssdnerf.latents import LatentAdam, LatentCache
from neural3d.methods.ssdnerf.model import SSDNeRFModel
from neural3d.metrics.image import psnr_from_mse


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
            o, d, tgt = (x.to(dev) for x in draw_rays(data, data.offsets[idx, None] + view,
                                                       g_rays))
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
