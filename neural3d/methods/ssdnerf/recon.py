"""Single/few-view reconstruction of unseen objects with the learned prior.

1. **Reconstruction-guided sampling**: sample a latent with DDIM while the measurement-guidance
   hook of :mod:`neural3d.diffusion` (:class:`~neural3d.diffusion.MeasurementGuidance`) pulls
   each predicted clean latent ``x0_hat`` down the gradient of the rendering loss on the observed
   view(s): ``recon.guidance_wrt="x0"`` takes plain gradient steps on ``x0_hat``, ``"xt"``
   differentiates through the denoiser to the noisy latent (reconstruction guidance).
2. **Fine-tuning**: optimise the latent with Adam on the rendering loss of the observed views plus
   the diffusion prior (the denoising loss at random ``t``, gradient into the latent), which keeps
   the unseen sides plausible.

``reconstruct(model, images, cams, cfg, mode=...)`` with ``mode`` one of ``guided_finetune`` (the
method), ``guided`` (step 1 only), ``finetune`` (step 2 only, from ``init``, e.g. the mean training
latent) and ``mean`` (return ``init`` unchanged).

Every object gets its own starting noise and ray draws: the generators are seeded with
``recon.seed`` plus a checksum of the observed images (:func:`object_seed`), so a result does not
depend on which other objects were reconstructed before it (shards, resumed runs). Fine-tuning
optimises the pre-activation ``code_`` (:meth:`SSDNeRFModel.deactivate` of the code), as the
reference does.
"""

from __future__ import annotations

import zlib

import torch

from neural3d.methods.multiview import to_uint8
from neural3d.methods.ssdnerf.config import ReconConfig
from neural3d.methods.ssdnerf.model import SSDNeRFModel

MODES = ("guided_finetune", "guided", "finetune", "mean")


def object_seed(images: torch.Tensor, seed: int = 0) -> int:
    """``seed`` plus the CRC-32 of the 8-bit observed images: a per-object seed that needs no
    object id and is the same wherever the object is reconstructed."""
    pixels = to_uint8(images.detach().float()).cpu()
    return (seed + zlib.crc32(pixels.numpy().tobytes())) % (2 ** 63)


def observed_rays(cams, images: torch.Tensor, device=None):
    o, d = cams.pixel_rays()
    return (o.reshape(-1, 3).to(device), d.reshape(-1, 3).to(device),
            images.reshape(-1, 3).to(device))


def render_loss(model: SSDNeRFModel, latent: torch.Tensor, o, d, rgb, n_rays: int = 0,
                generator: torch.Generator | None = None, reduction: str = "mean"
                ) -> torch.Tensor:
    if n_rays and n_rays < o.shape[0]:
        sel = torch.randperm(o.shape[0], generator=generator)[:n_rays].to(o.device)
        o, d, rgb = o[sel], d[sel], rgb[sel]
    pred = model.render_rays(latent, o[None], d[None])["rgb"][0]
    err = (pred - rgb).pow(2)
    return err.mean() if reduction == "mean" else err.sum() / 2


def guided_sample(model: SSDNeRFModel, images: torch.Tensor, cams, rc: ReconConfig,
                  x_T: torch.Tensor | None = None, generator: torch.Generator | None = None
                  ) -> torch.Tensor:
    """Step 1: DDIM with the rendering-loss gradient on x0_hat (``guidance_scale = 0``: an
    unguided sample from the same noise)."""
    from neural3d.diffusion import MeasurementGuidance

    dev = next(model.parameters()).device
    o, d, rgb = observed_rays(cams, images, dev)
    g = torch.Generator().manual_seed(object_seed(images, rc.seed)) if generator is None \
        else generator

    scale = observed_scale(model, images)

    def loss_fn(x0):
        code = model.from_image(x0)
        if rc.guidance_loss == "reference":  # the training loss of the observed views
            return scale * render_loss(model, code, o, d, rgb, rc.guidance_rays, g) \
                + model.cfg.loss.reg_weight * code.pow(2).mean()
        # sum-of-squares / 2 over rays: the gradient per texel does not shrink with more pixels
        return render_loss(model, code, o, d, rgb, rc.guidance_rays, g, "sum")

    guidance = [MeasurementGuidance(
        loss_fn, scale=rc.guidance_scale, wrt=rc.guidance_wrt, snr_weighted=False,
        snr_power=rc.guidance_snr_power if rc.guidance_snr_power >= 0 else None)] \
        if rc.guidance_scale > 0 else None
    if x_T is None:
        x_T = torch.randn((1, 3 * model.C, model.R, model.R), generator=g)
    return model.sample(1, guidance=guidance, steps=rc.guidance_steps, sampler="ddim",
                        x_T=x_T.to(dev), device=dev)


def observed_scale(model: SSDNeRFModel, images: torch.Tensor) -> float:
    """The pixel-MSE weight of the observed views ``images [V, ...]``
    (:meth:`SSDNeRFModel.render_weights` of an object with ``V`` views)."""
    return float(model.render_weights(torch.tensor([images.shape[0]]))[0])


def finetune(model: SSDNeRFModel, init: torch.Tensor, images: torch.Tensor, cams,
             rc: ReconConfig, prior_weight: float | None = None) -> torch.Tensor:
    """Step 2: Adam (lr ``finetune_lr``, times ``finetune_lr_decay`` after every step) on the
    pre-activation of the code ``init`` for ``finetune_steps`` steps: the observed views'
    rendering loss (:func:`observed_scale`, ``finetune_rays`` rays a step) +
    ``finetune_reg_weight * mean(code^2)`` + the diffusion prior (weight c_diff *
    ``finetune_prior_weight``), whose gradient is computed every ``finetune_prior_every`` steps
    and reused in between (the reference: 25 x (1 prior gradient + 4 Adam steps)). Returns the
    code."""
    dev = next(model.parameters()).device
    o, d, rgb = observed_rays(cams, images, dev)
    code_ = model.deactivate(init.detach().to(dev)).clone().requires_grad_(True)
    opt = torch.optim.Adam([code_], lr=rc.finetune_lr)
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, rc.finetune_lr_decay)
    g = torch.Generator().manual_seed(object_seed(images, rc.seed + 1))
    pw = model.cfg.diffusion.weight * rc.finetune_prior_weight if prior_weight is None \
        else prior_weight
    rw = observed_scale(model, images)
    req = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    was = model.training
    model.eval()
    prior = None
    try:
        for step in range(rc.finetune_steps):
            opt.zero_grad(set_to_none=True)
            if pw > 0 and step % rc.finetune_prior_every == 0:
                prior = torch.autograd.grad(pw * model.diffusion_loss(model.activate(code_), g),
                                            code_)[0]
            lat = model.activate(code_)
            loss = rw * render_loss(model, lat, o, d, rgb, rc.finetune_rays, g)
            if rc.finetune_reg_weight > 0:
                loss = loss + rc.finetune_reg_weight * lat.pow(2).mean()
            loss.backward()
            if prior is not None:
                code_.grad += prior
            opt.step()
            sched.step()
    finally:
        for p, r in zip(model.parameters(), req, strict=True):
            p.requires_grad_(r)
        model.train(was)
    return model.activate(code_).detach()


def reconstruct(model: SSDNeRFModel, images: torch.Tensor, cams, rc: ReconConfig,
                mode: str = "guided_finetune", init: torch.Tensor | None = None
                ) -> torch.Tensor:
    """Latent ``[1,3,C,R,R]`` of an unseen object from observed ``images [V,H,W,3]``."""
    if mode not in MODES:
        raise ValueError(f"unknown reconstruction mode {mode!r} (choose from {MODES})")
    dev = next(model.parameters()).device
    if init is None:
        init = torch.zeros((1, *model.latent_shape))
    if mode == "mean":
        return init.to(dev)
    if mode == "finetune":
        return finetune(model, init, images, cams, rc)
    lat = guided_sample(model, images, cams, rc)
    if mode == "guided":
        return lat
    return finetune(model, lat, images, cams, rc)
