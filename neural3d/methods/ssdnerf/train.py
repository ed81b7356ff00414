"""SSDNeRF training through the shared :class:`~neural3d.train.Trainer`.

One step (single-stage, the paper's method): draw ``batch_objects`` training objects, fetch their
pre-activation latents ``code_`` from the cache, ``code = activate(code_)``, and minimise

    render_weight * s_V * MSE(render(code, random rays), pixels)
    + c_diff * L_diff(code)               # gradient flows into the latents
    + reg_weight * mean(code^2) + tv_weight * TV(code)

over the decoder, the U-Net and the batch's latents (per-object Adam in the cache); ``s_V`` is 1,
or ``3 * (1 - exp(-0.1 V))`` for an object of ``V`` views under ``loss.scaling = reference``.

``optim.inner_steps = K_in > 1`` is the reference code's inner loop: the diffusion loss's latent
gradient ("prior gradient") is computed once at the batch's latents, then ``K_in - 1``
latent-only Adam steps follow on fresh rays (rendering + regulariser gradient + the cached prior
gradient, decoder fixed), then the joint step above, in which the latents again receive the
cached prior gradient and the U-Net the gradient of the same diffusion loss (same t, noise and
dropout). The reference steps the U-Net before the inner loop; nothing in the loop reads the
U-Net, so the result is the same.
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
    """``(model, cache, optimizers)``; optimizers is ``{"main": Adam, "latents": LatentAdam}``
    (see :func:`warmup_scheduler` for the main one's warm-up)."""
    torch.manual_seed(cfg.train.seed if seed is None else seed)
    model = SSDNeRFModel(cfg).to(device)
    g = torch.Generator().manual_seed(cfg.train.seed + 17)
    cache = LatentCache(num_objects, model.latent_shape, cfg.optim.latent_init_std,
                        path=cfg.optim.cache_path or None, generator=g, root=cfg.train.out_dir)
    main = torch.optim.Adam([
        {"params": list(model.field.parameters()), "lr": cfg.optim.decoder_lr},
        {"params": list(model.unet.parameters()), "lr": cfg.optim.unet_lr}])
    return model, cache, {"main": main, "latents": LatentAdam(cache, cfg.optim.latent_lr)}


def warmup_scheduler(opt: torch.optim.Optimizer, steps: int, ratio: float):
    """mmcv's linear warm-up (SSDNeRF's ``lr_config``): the lr factor rises from ``ratio`` at
    step 0 to 1 at ``steps``, ``ratio + (1 - ratio) * step / steps``; None when ``steps`` is 0."""
    if steps <= 0:
        return None
    return torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: 1.0 if s >= steps else ratio + (1 - ratio) * s / steps)


def inner_steps(optim, step: int) -> int:
    """``K_in`` at ``step``: ``optim.inner_steps``, replaced by ``K`` from each
    ``[step_from, K]`` of ``optim.inner_steps_after`` that ``step`` has reached."""
    k = optim.inner_steps
    for start, value in sorted(optim.inner_steps_after):
        if step >= start:
            k = value
    return int(k)


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
    pixel_weights = model.render_weights(data.counts)

    def draw(idx):
        view = (torch.rand(len(idx), R, generator=g_rays) * data.counts[idx, None]).long()
        return tuple(x.to(dev) for x in draw_rays(data, data.offsets[idx, None] + view, g_rays))

    def scene_loss(idx, lat, render_mse, out):
        """Rendering (per-object weighted) + latent regularisers of the codes ``lat``."""
        reg = lat.pow(2).mean()
        loss = (render_mse * pixel_weights[idx].to(dev)).mean() + lw.reg_weight * reg
        mse = render_mse.detach().mean()
        out.update(render_mse=mse, psnr=psnr_from_mse(mse), latent_l2=reg.detach())
        if lw.tv_weight > 0:
            tv = tv_loss(lat)
            loss = loss + lw.tv_weight * tv
            out["latent_tv"] = tv.detach()
        return loss

    def prior_gradient(leaf, update_norm):
        """``c_diff * dL_diff / d code_`` at the batch's current latents (unwrapped model: no
        parameter gradients), drawing the noise the final forward will redraw."""
        c0 = leaf.detach().clone().requires_grad_(True)
        loss = cfg.diffusion.weight * model.diffusion_loss(model.activate(c0), g_noise,
                                                           update_norm=update_norm)
        return torch.autograd.grad(loss, c0)[0], c0.detach()

    def inner_step(idx, leaf, prior):
        """One latent-only Adam step: rendering + regulariser gradient plus the cached prior
        gradient (decoder fixed). Returns the refetched leaf."""
        o, d, tgt = draw(idx)
        lat = model.activate(leaf)
        rgb = model.render_rays(lat, o, d, g_rays)["rgb"]
        loss = scene_loss(idx, lat, (rgb - tgt).pow(2).mean((1, 2)), {})
        leaf.grad = torch.autograd.grad(loss, leaf)[0] + prior
        latopt.step()
        return latopt.fetch(idx, dev)

    def step_fn(step: int) -> dict[str, Any]:
        if N >= B * world:
            idx = torch.randperm(N, generator=g_batch)[:B * world][rank::world]
        else:
            idx = torch.randint(0, N, (B * world,), generator=g_batch)[rank::world]
        stage2 = two and step >= cfg.optim.stage1_steps
        latopt.frozen = stage2
        leaf = latopt.fetch(idx, dev)
        out: dict[str, Any] = {}
        k_in = inner_steps(cfg.optim, step) if not two and cfg.diffusion.weight > 0 else 1
        update_norm = not (0 < lw.freeze_norm_after <= step)
        prior = None
        if k_in > 1:  # the reference's inner loop: K_in - 1 latent-only steps, then the joint one
            # the joint step's U-Net loss redraws the same t and noise (and dropout masks)
            noise_state = g_noise.get_state()
            with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
                prior, start = prior_gradient(leaf, update_norm)
                for _ in range(k_in - 1):
                    leaf = inner_step(idx, leaf, prior)
            g_noise.set_state(noise_state)
        lat = model.activate(leaf)             # the codes
        o, d, tgt = draw(idx) if not stage2 else (None, None, None)
        diff_in = lat if cfg.optim.mode == "single" else lat.detach()
        if prior is not None:
            diff_in = model.activate(start)    # U-Net gradient only; codes get `prior` below
        if cfg.diffusion.weight <= 0 and not two:
            diff_in = None
        parts = trainer.model(lat, o, d, tgt, diff_in, g_noise,
                              update_norm=update_norm and prior is None,
                              render_generator=g_rays)
        loss = torch.zeros((), device=dev)
        if not stage2:
            loss = loss + scene_loss(idx, lat, parts["render_mse"], out)
        if "diffusion" in parts:
            w = cfg.diffusion.weight if cfg.diffusion.weight > 0 else 1.0
            loss = loss + w * parts["diffusion"]
            out["diffusion"] = parts["diffusion"].detach()
        if prior is not None:  # gradient `prior` into the latents, value 0
            surrogate = (leaf * prior).sum()
            loss = loss + (surrogate - surrogate.detach())
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
