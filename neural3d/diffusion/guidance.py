"""Guidance for any denoiser: classifier-free, classifier, measurement, and x0 thresholding.

Conventions (kept everywhere in neural3d):

- **Classifier-free guidance** combines the two predictions as
  ``pred = uncond + w * (cond - uncond)``. ``w = 1`` is the plain conditional model, ``w = 0`` the
  unconditional one, ``w > 1`` extrapolates (the "cfg 3.0" of the CLI). Because every conversion
  between eps/x0/v is affine in the prediction, the result is the same in any parameterisation.
- **Classifier guidance** (Dhariwal & Nichol 2021): ``grad_fn(x_t, t, **cond)`` returns
  ``grad_x log p(y | x_t)``; the noise prediction becomes ``eps - scale * sigma_t * grad``.
- **Measurement guidance**: a differentiable ``loss_fn(x0_hat) -> scalar`` on the predicted clean
  sample (e.g. SSDNeRF's rendering loss of the denoised triplane against the observed views, or
  NerfDiff's ``|I - I_nerf|^2 / 2``). Two modes:

  * ``wrt="x0"`` (default, no backprop through the network): ``g = grad_{x0_hat} loss`` and
    ``eps <- eps + scale * (sigma_t / alpha_t) * g`` (``snr_weighted=True``). Since
    ``x0_hat = (x_t - sigma eps) / alpha``, this moves x0_hat by ``-scale * g / snr``: a
    gradient step whose size grows as ``1 / snr``, i.e. very far at low SNR, so use a small
    scale or ``t_max``. It is *not* NerfDiff's NGD, which is the bounded blend
    ``x0_hat <- (1 - gamma) x0_CDM + gamma x_NeRF`` (``gamma`` in ``[0, 1]``); with
    ``loss = |x0 - x_NeRF|^2 / 2`` that blend is ``snr_weighted=False`` with ``scale = gamma``.
    ``snr_weighted=False`` takes a plain gradient step ``x0_hat <- x0_hat - scale * g``
    (``eps <- eps + scale * alpha_t / sigma_t * g``), bounded at every noise level.
  * ``wrt="xt"`` (DPS, Chung et al. 2023): ``g = grad_{x_t} loss(x0_hat(x_t))`` through the
    denoiser, and ``eps <- eps + scale * sigma_t * g`` (a classifier-guidance step with
    ``log p(y|x_t) = -loss``).

  Guidance is applied only for ``t_min <= t <= t_max``.

- **Thresholding** of the predicted x0: ``"clip"`` clamps to ``[-clip, clip]``; ``"dynamic"``
  (Imagen) takes per sample the ``percentile`` of ``|x0|``, ``s = max(s, clip)``, and maps
  ``x0 <- clamp(x0, -s, s) * clip / s``.

Order inside :class:`neural3d.diffusion.samplers.Denoiser`: model (CFG is a model wrapper) ->
(x0, eps) -> classifier guidance -> measurement guidance -> thresholding -> eps recomputed from
the final x0 so that the pair stays consistent with ``x_t``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


def _cat_kwargs(cond: dict, uncond: dict) -> dict:
    out = {}
    for key in set(cond) | set(uncond):
        c = cond.get(key, uncond.get(key))
        u = uncond.get(key, c)
        if isinstance(c, torch.Tensor) and isinstance(u, torch.Tensor):
            out[key] = torch.cat([c, u], 0)
        elif c is None and u is None:
            out[key] = None
        else:
            raise TypeError(f"classifier-free guidance needs tensors for '{key}' in both branches")
    return out


class ClassifierFreeGuidance:
    """Wrap ``model`` so that ``wrapped(x, t, **cond)`` returns ``uncond + w (cond - uncond)``.

    ``uncond`` maps keyword names to their unconditional value (e.g. ``{"y": null_labels}``); keys
    it leaves out are passed unchanged to both branches. The two branches run as one batch."""

    def __init__(self, model: Callable, scale: float, uncond: dict, batched: bool = True):
        self.model, self.scale, self.uncond, self.batched = model, float(scale), uncond, batched

    def __call__(self, x: torch.Tensor, t: torch.Tensor, **cond) -> torch.Tensor:
        if self.scale == 1.0:
            return self.model(x, t, **cond)
        uncond = {k: (v(x.shape[0]) if callable(v) else v) for k, v in self.uncond.items()}
        if self.scale == 0.0:
            return self.model(x, t, **{**cond, **uncond})
        if self.batched:
            out = self.model(torch.cat([x, x]), torch.cat([t, t]), **_cat_kwargs(cond, uncond))
            c, u = out.chunk(2)
        else:
            c = self.model(x, t, **cond)
            u = self.model(x, t, **{**cond, **uncond})
        return u + self.scale * (c - u)


def classifier_free_guidance(model: Callable, scale: float, uncond: dict,
                             batched: bool = True) -> ClassifierFreeGuidance:
    """See :class:`ClassifierFreeGuidance` (``uncond + scale * (cond - uncond)``)."""
    return ClassifierFreeGuidance(model, scale, uncond, batched)


@dataclass
class ClassifierGuidance:
    """``eps <- eps - scale * sigma * grad_fn(x_t, t, **cond)``."""

    grad_fn: Callable
    scale: float = 1.0
    needs_xt_graph = False

    def apply(self, x_t, t, x0, eps, alpha, sigma, cond):
        with torch.enable_grad():
            g = self.grad_fn(x_t.detach(), t, **cond)
        return eps - self.scale * sigma * g.detach()


@dataclass
class MeasurementGuidance:
    """Gradient of a differentiable ``loss_fn(x0_hat) -> scalar`` (see module docstring).

    ``loss_fn`` may also take ``t`` as a keyword if it accepts it (``pass_t=True``).
    ``snr_power = ω`` (either ``wrt``) replaces the step weights above by SSDNeRF's
    (Lakonik/SSDNeRF ``GaussianDiffusion.pred_x_0``): ``x0_hat -= scale * sigma^(2 - 2ω) *
    alpha^(2ω - 1) * g``, i.e. ``eps += scale * sigma^(1 - 2ω) * alpha^(2ω) * g``."""

    loss_fn: Callable
    scale: float = 1.0
    wrt: str = "x0"
    pass_t: bool = False
    snr_weighted: bool = True
    t_min: float = 0.0
    t_max: float = 1.0
    snr_power: float | None = None

    def __post_init__(self):
        if self.wrt not in ("x0", "xt"):
            raise ValueError("MeasurementGuidance.wrt must be 'x0' or 'xt'")

    @property
    def needs_xt_graph(self) -> bool:
        return self.wrt == "xt"

    def _loss(self, x0, t):
        return self.loss_fn(x0, t=t) if self.pass_t else self.loss_fn(x0)

    def apply(self, x_t, t, x0, eps, alpha, sigma, cond):
        if t is not None:
            tt = float(t.flatten()[0]) if isinstance(t, torch.Tensor) else float(t)
            if not (self.t_min <= tt <= self.t_max):
                return eps
        if self.wrt == "x0":
            with torch.enable_grad():
                x0_ = x0.detach().requires_grad_(True)
                (g,) = torch.autograd.grad(self._loss(x0_, t), x0_)
            factor = sigma / alpha if self.snr_weighted else alpha / sigma
        else:
            if not x_t.requires_grad:
                raise RuntimeError("measurement guidance wrt='xt' needs the denoiser graph")
            with torch.enable_grad():
                (g,) = torch.autograd.grad(self._loss(x0, t), x_t)
            factor = sigma
        if self.snr_power is not None:
            w = self.snr_power
            factor = sigma ** (1 - 2 * w) * alpha ** (2 * w)
        return eps + self.scale * factor * g


def threshold_x0(x0: torch.Tensor, kind: str | None, clip: float = 1.0,
                 percentile: float = 0.995) -> torch.Tensor:
    """``None``/``"none"``, ``"clip"`` or ``"dynamic"`` thresholding (see module docstring)."""
    if kind in (None, "none"):
        return x0
    if kind == "clip":
        return x0.clamp(-clip, clip)
    if kind == "dynamic":
        s = torch.quantile(x0.detach().abs().flatten(1).float(), percentile, dim=1)
        s = s.clamp(min=clip).to(x0).reshape(-1, *([1] * (x0.ndim - 1)))
        return x0.clamp(-s, s) * (clip / s)
    raise ValueError(f"unknown thresholding '{kind}' (use none, clip or dynamic)")
