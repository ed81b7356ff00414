"""Test time: the NeRF from one image, then NeRF-guided distillation (NGD) and its ablations.

Every mode starts from the single-image NeRF's planes (:meth:`NerfDiffModel.encode`) and, except
``nerf``, renders ``N`` virtual views around the object once: those renders are the CDM's fixed
conditions, and each view starts from its render noised to ``t_start`` (the same noise for
every mode for a seed). Modes (:data:`MODES`):

- ``nerf``: the NeRF as predicted (no test-time work).
- ``cdm``: no 3D consistency: each *test* view is a CDM sample conditioned on the NeRF's render
  of that view (:func:`sample_views`, at render time).
- ``naive``: sample every virtual view independently with the CDM, then fit the triplanes to
  the samples (``steps * finetune_steps`` Adam steps).
- ``sds``: score distillation: ``steps * finetune_steps`` Adam steps on the triplanes, each
  with the gradient ``(eps_hat - eps)`` of the CDM at a random time ``t <= t_start`` through
  full renders of random virtual views.
- ``ngd``: at each DDIM step blend the CDM's clean estimate with the current NeRF render
  (:func:`ngd_blend`), take the DDIM step, read the CDM's clean estimate at the new state as the
  target and fine-tune the triplanes for ``finetune_steps`` Adam steps on all virtual views.

Every fitting mode also fits the input view (``anchor_weight``). Only the triplanes change; the
decoder and the CDM are fixed. Rays and noise come from one generator seeded by ``ngd.seed``, and
renders are deterministic, so a mode's result is a function of the seed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from neural3d.cameras import Cameras, sphere_c2w
from neural3d.diffusion.samplers import ddim_step
from neural3d.methods.nerfdiff.config import NGDConfig
from neural3d.methods.nerfdiff.model import NerfDiffModel, from_signed, to_signed

MODES = ("nerf", "cdm", "naive", "sds", "ngd")


@dataclass
class NerfDiffState:
    """What ``reconstruct`` returns: ``planes [1, 3, C, H, W]`` in the frustum of ``camera``
    (the input camera, len 1), the input ``image [1, H, W, 3]`` and the ``mode`` that made it;
    ``mode == "cdm"`` makes :meth:`NerfDiff.render` sample each view with the CDM."""

    planes: torch.Tensor
    camera: Cameras
    image: torch.Tensor
    mode: str = "nerf"

    def cpu(self) -> NerfDiffState:
        return NerfDiffState(self.planes.cpu(), self.camera.to("cpu"), self.image.cpu(),
                             self.mode)


def ngd_blend(x_t: torch.Tensor, x0_cdm: torch.Tensor, x_nerf: torch.Tensor, gamma: float,
              alpha: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """NGD's guided clean estimate ``x0 = (1 - gamma) x0_cdm + gamma x_nerf`` and the noise
    ``eps = (x_t - alpha x0) / sigma`` consistent with it (equal to mixing the noise
    predictions of the CDM and of the NeRF render with the same weights)."""
    x0 = (1 - gamma) * x0_cdm + gamma * x_nerf
    return x0, (x_t - alpha * x0) / sigma


def virtual_cameras(cam_in: Cameras, n: int, elevations_deg) -> Cameras:
    """``n`` cameras looking at the origin from the input camera's distance, evenly spaced in
    azimuth starting one step after the input's, elevations cycled from ``elevations_deg``;
    the input's intrinsics and image size."""
    eye = cam_in.centers[0].double()
    r = float(eye.norm())
    az0 = math.atan2(float(eye[1]), float(eye[0]))
    az = az0 + 2 * math.pi * torch.arange(1, n + 1, dtype=torch.float64) / (n + 1)
    el = torch.tensor([math.radians(elevations_deg[k % len(elevations_deg)]) for k in range(n)],
                      dtype=torch.float64)
    c2w = sphere_c2w(az, el, r).to(cam_in.c2w.dtype)
    return Cameras(c2w, cam_in.fx[0].cpu(), cam_in.fy[0].cpu(), cam_in.cx[0].cpu(),
                   cam_in.cy[0].cpu(), cam_in.width, cam_in.height)


def _times(cfg: NGDConfig) -> list[tuple[float, float]]:
    """The DDIM steps ``(t, s)`` from ``t_start`` down to 0 (uniform in t)."""
    ts = [cfg.t_start * (1 - k / cfg.steps) for k in range(cfg.steps)]
    return list(zip(ts, ts[1:] + [0.0], strict=True))


class Distiller:
    """One object's test-time state: the model, its input view, the virtual views and their
    fixed conditions, the seeded generator (see the module docstring)."""

    def __init__(self, model: NerfDiffModel, image: torch.Tensor, cam_in: Cameras,
                 cfg: NGDConfig):
        self.model, self.cfg = model, cfg
        dev = next(model.parameters()).device
        self.image, self.cam_in = image.to(dev), cam_in.to(dev)
        self.g = torch.Generator().manual_seed(cfg.seed)
        with torch.no_grad():
            self.planes0 = model.encode(self.image)

    # ---------------------------------------------------------------- shared pieces
    def conditions(self, cams: Cameras) -> torch.Tensor:
        """The CDM's conditions for ``cams``: the initial NeRF's renders ``[V, H, W, 3]``."""
        return self.model.render_views(self.planes0, self.cam_in, cams)

    def conditioned(self, cams: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        """``(renders [V, H, W, 3], the CDM's conditions [V, 3|6, H, W])`` of ``cams``."""
        renders = self.conditions(cams)
        return renders, self.model.condition(renders, self.image.expand(len(cams), -1, -1, -1))

    def virtual(self) -> tuple[Cameras, torch.Tensor, torch.Tensor]:
        """The virtual cameras with their renders and conditions (:meth:`conditioned`)."""
        cams = virtual_cameras(self.cam_in, self.cfg.views, self.cfg.elevations)
        return (cams, *self.conditioned(cams))

    def start(self, renders: torch.Tensor) -> torch.Tensor:
        """The renders noised to ``t_start`` (noise from the generator): ``[V, 3, H, W]``."""
        x = to_signed(renders)
        a, s = self.model.alpha_sigma(self.cfg.t_start, x)
        return a * x + s * torch.randn(x.shape, generator=self.g).to(x)

    def x0(self, x: torch.Tensor, t: float, cond: torch.Tensor) -> torch.Tensor:
        return self.model.predict_x0(x, t, cond, self.cfg.guidance_scale)

    def _pixel_rays(self, cams: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
        """``(origins, directions) [V + 1, H * W, 3]`` of ``cams`` and then the input camera
        (on the CPU): the very rays their renders are made with."""
        o, d = Cameras.cat([cams.to("cpu"), self.cam_in.to("cpu")]).pixel_rays()
        return o.reshape(len(cams) + 1, -1, 3), d.reshape(len(cams) + 1, -1, 3)

    def _ray_loss(self, planes: torch.Tensor, rays, rgb: torch.Tensor,
                  weight: torch.Tensor) -> torch.Tensor:
        """Weighted MSE of ``rays_per_view`` random pixels of each view of ``rays`` (from
        :meth:`_pixel_rays`) against ``rgb [V, H * W, 3]``; ``weight [V]`` per view."""
        V, R = rgb.shape[0], self.cfg.rays_per_view
        px = torch.randint(0, rgb.shape[1], (V, R), generator=self.g)
        view = torch.arange(V)[:, None].expand(V, R)
        o, d, target = (x[view, px].to(planes) for x in (*rays, rgb))
        pred = self.model.render_rays(planes, self.cam_in, o.reshape(1, -1, 3),
                                      d.reshape(1, -1, 3), jitter=False)
        err = (pred.reshape(V, R, 3) - target).pow(2).mean((1, 2))
        return (err * weight.to(err)).sum() / weight.sum()

    def fit(self, planes: torch.Tensor, opt: torch.optim.Optimizer, targets: torch.Tensor,
            cams: Cameras, steps: int) -> None:
        """``steps`` Adam steps of ``planes`` on ``rays_per_view`` random pixels of each of
        ``targets [V, H, W, 3]`` seen from ``cams`` and of the input view (weight
        ``anchor_weight``)."""
        V = len(cams)
        rays = self._pixel_rays(cams)
        rgb = torch.cat([targets, self.image]).cpu().reshape(V + 1, -1, 3)
        weight = torch.ones(V + 1)
        weight[V] = self.cfg.anchor_weight
        for _ in range(steps):
            loss = self._ray_loss(planes, rays, rgb, weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    def _trainable(self) -> tuple[torch.Tensor, torch.optim.Optimizer]:
        planes = self.planes0.clone().requires_grad_(True)
        return planes, torch.optim.Adam([planes], lr=self.cfg.lr)

    # ---------------------------------------------------------------- modes
    def sample(self, cams: Cameras) -> torch.Tensor:
        """CDM samples ``[V, H, W, 3]`` of ``cams``, each conditioned on its NeRF render and
        started from it noised (``cdm`` and ``naive``)."""
        renders, cond = self.conditioned(cams)
        x = self.start(renders)
        with torch.no_grad():
            for t, s in _times(self.cfg):
                x0 = self.x0(x, t, cond)
                a_t, s_t = self.model.alpha_sigma(t, x)
                x, _ = ddim_step(x, x0, (x - a_t * x0) / s_t, (a_t, s_t),
                                 self.model.alpha_sigma(s, x))
        return from_signed(x).clamp(0, 1)

    def naive(self) -> torch.Tensor:
        cams = virtual_cameras(self.cam_in, self.cfg.views, self.cfg.elevations)
        targets = self.sample(cams)
        planes, opt = self._trainable()
        self.fit(planes, opt, targets, cams, self.cfg.steps * self.cfg.finetune_steps)
        return planes.detach()

    def ngd(self) -> torch.Tensor:
        cfg = self.cfg
        cams, renders, cond = self.virtual()
        x = self.start(renders)
        planes, opt = self._trainable()
        steps = _times(cfg)
        with torch.no_grad():
            x0_cdm = self.x0(x, steps[0][0], cond)
        for t, s in steps:
            with torch.no_grad():
                x_nerf = to_signed(self.model.render_views(planes.detach(), self.cam_in, cams))
                a_t, s_t = self.model.alpha_sigma(t, x)
                x0, eps = ngd_blend(x, x0_cdm, x_nerf, cfg.gamma, a_t, s_t)
                x, _ = ddim_step(x, x0, eps, (a_t, s_t), self.model.alpha_sigma(s, x))
                x0_cdm = self.x0(x, s, cond) if s > 0 else x
            self.fit(planes, opt, from_signed(x0_cdm).clamp(0, 1), cams, cfg.finetune_steps)
        return planes.detach()

    def sds(self) -> torch.Tensor:
        cfg = self.cfg
        cams, _, cond = self.virtual()
        planes, opt = self._trainable()
        H, W = self.image.shape[1:3]
        per_step = max(1, min(len(cams), cfg.rays_per_view * len(cams) // (H * W)))
        rays = self._pixel_rays(cams)
        anchor_rays = (rays[0][-1:], rays[1][-1:])
        anchor_rgb = self.image.cpu().reshape(1, -1, 3)
        one = torch.ones(1)
        for _ in range(cfg.steps * cfg.finetune_steps):
            idx = torch.randperm(len(cams), generator=self.g)[:per_step]
            n = len(idx)
            img = self.model.render_rays(planes.expand(n, -1, -1, -1, -1),
                                         self.cam_in[torch.zeros(n, dtype=torch.long)],
                                         rays[0][idx].to(planes), rays[1][idx].to(planes),
                                         jitter=False)
            x = to_signed(img.reshape(n, H, W, 3))
            t = 0.02 + (cfg.t_start - 0.02) * float(torch.rand((), generator=self.g))
            a, s = self.model.alpha_sigma(t, x)
            eps = torch.randn(x.shape, generator=self.g).to(x)
            with torch.no_grad():
                x0 = self.x0(a * x + s * eps, t, cond[idx.to(cond.device)])
                eps_hat = (a * x + s * eps - a * x0) / s
            sds = (x * (eps_hat - eps)).sum() / x.numel()    # grad wrt x: (eps_hat - eps)
            loss = sds + cfg.anchor_weight * self._ray_loss(planes, anchor_rays, anchor_rgb, one)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        return planes.detach()


def distill(model: NerfDiffModel, image: torch.Tensor, cam_in: Cameras, cfg: NGDConfig,
            mode: str = "ngd") -> NerfDiffState:
    """The test-time state of one object from its input view ``image [1, H, W, 3]`` seen from
    ``cam_in`` (len 1), with ``mode`` in :data:`MODES`."""
    if mode not in MODES:
        raise ValueError(f"unknown NerfDiff mode {mode!r} (use one of {', '.join(MODES)})")
    was = model.training
    model.eval()
    try:
        dist = Distiller(model, image, cam_in, cfg)
        planes = (dist.planes0 if mode in ("nerf", "cdm")
                  else {"naive": dist.naive, "sds": dist.sds, "ngd": dist.ngd}[mode]())
    finally:
        model.train(was)
    return NerfDiffState(planes, dist.cam_in, dist.image, mode)


def sample_views(model: NerfDiffModel, state: NerfDiffState, cams: Cameras, cfg: NGDConfig,
                 batch: int = 16) -> torch.Tensor:
    """The ``cdm`` mode's views: CDM samples ``[V, H, W, 3]`` of ``cams``, ``batch`` at a
    time (one seeded generator for all)."""
    dist = Distiller(model, state.image, state.camera, cfg)
    return torch.cat([dist.sample(cams[torch.arange(s, min(s + batch, len(cams)))]).cpu()
                      for s in range(0, len(cams), batch)])
