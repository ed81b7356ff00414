"""What a denoiser predicts (``eps``, ``x0`` or ``v``), exact conversions, and the one
diffusion objective (:class:`DiffusionObjective`: schedule + parameterisation + loss weighting).

Conventions: time ``t`` in ``[0, 1]`` (``t = 0`` clean, ``t = 1`` pure noise), variance preserving
``x_t = alpha_t x0 + sigma_t eps`` with ``alpha^2 + sigma^2 = 1``, ``snr = alpha^2 / sigma^2`` and
``v = alpha eps - sigma x0`` (Salimans & Ho 2022)::

    x0  = (x_t - sigma eps) / alpha   = alpha x_t - sigma v
    eps = (x_t - alpha x0) / sigma    = sigma x_t + alpha v
    v   = alpha eps - sigma x0        = (alpha x_t - x0) / sigma

Every conversion is affine in the prediction for a fixed ``x_t``, so classifier-free guidance
(an affine combination with weights summing to 1) gives the same result in any parameterisation.

Loss weighting. For one sample the three squared errors are proportional:
``|dx0|^2 : |deps|^2 : |dv|^2 = 1 : snr : (1 + snr)``. The objective computes the MSE of the
network's *native* output and rescales it so that the effective weight in x0-space
(:meth:`DiffusionObjective.weights`) is

- ``"eps"``: ``snr``           (the DDPM "simple" loss, eps-MSE)
- ``"v"``: ``snr + 1``         (v-MSE)
- ``"x0"``: ``1``              (x0-MSE)
- ``"min_snr"``: ``min(snr, gamma)`` (Hang et al. 2023, min-SNR-gamma)
- ``"snr_pow"``: ``snr ** omega`` (SSDNeRF's weighting, ``omega = snr_power``; ``omega = 1``
  is ``"eps"``, ``omega = 0`` is ``"x0"``)
- ``"native"``: plain MSE of whatever the network predicts (same as the matching name above).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from neural3d.diffusion.schedules import NoiseSchedule

PARAMETERIZATIONS = ("eps", "x0", "v")
WEIGHTINGS = ("native", "eps", "v", "x0", "min_snr", "snr_pow")


def _check(parameterization: str) -> None:
    if parameterization not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization '{parameterization}' "
                         f"(use one of {PARAMETERIZATIONS})")


def to_x0(pred: torch.Tensor, parameterization: str, x_t: torch.Tensor, alpha,
          sigma) -> torch.Tensor:
    _check(parameterization)
    if parameterization == "x0":
        return pred
    if parameterization == "eps":
        return (x_t - sigma * pred) / alpha
    return alpha * x_t - sigma * pred


def to_eps(pred: torch.Tensor, parameterization: str, x_t: torch.Tensor, alpha,
           sigma) -> torch.Tensor:
    _check(parameterization)
    if parameterization == "eps":
        return pred
    if parameterization == "x0":
        return (x_t - alpha * pred) / sigma
    return sigma * x_t + alpha * pred


def to_v(pred: torch.Tensor, parameterization: str, x_t: torch.Tensor, alpha,
         sigma) -> torch.Tensor:
    _check(parameterization)
    if parameterization == "v":
        return pred
    if parameterization == "eps":
        return (pred - sigma * x_t) / alpha
    return (alpha * x_t - pred) / sigma


def convert(pred: torch.Tensor, src: str, dst: str, x_t: torch.Tensor, alpha,
            sigma) -> torch.Tensor:
    """Convert a prediction from parameterisation ``src`` to ``dst``."""
    _check(dst)
    return {"eps": to_eps, "x0": to_x0, "v": to_v}[dst](pred, src, x_t, alpha, sigma)


def target(parameterization: str, x0: torch.Tensor, eps: torch.Tensor, alpha,
           sigma) -> torch.Tensor:
    """The regression target of ``parameterization``."""
    _check(parameterization)
    if parameterization == "eps":
        return eps
    if parameterization == "x0":
        return x0
    return alpha * eps - sigma * x0


def from_x0_eps(x0: torch.Tensor, eps: torch.Tensor, parameterization: str, alpha,
                sigma) -> torch.Tensor:
    """Express the pair (x0, eps) as a prediction of ``parameterization`` (used by guidance)."""
    return target(parameterization, x0, eps, alpha, sigma)


def native_weight(snr: torch.Tensor, parameterization: str) -> torch.Tensor:
    """x0-space weight of the plain MSE of ``parameterization``: eps ``snr``, x0 ``1``, v
    ``snr + 1``."""
    _check(parameterization)
    if parameterization == "eps":
        return snr
    return snr + 1 if parameterization == "v" else torch.ones_like(snr)


def _bc(v, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-sample ``[B]`` tensor (or one already shaped like ``x``) against ``x``."""
    v = torch.as_tensor(v).to(x.dtype).to(x.device)  # cast first: float64 may not exist there
    if v.ndim == 1 and x.ndim > 1 and v.shape[0] == x.shape[0]:
        v = v.reshape(-1, *([1] * (x.ndim - 1)))
    return v


@dataclass
class DiffusionObjective:
    """The denoising objective: draw ``t`` from ``schedule``, noise ``x0``, regress the target of
    ``parameterization`` with the MSE weighted so that its x0-space weight is ``weighting`` (see
    the module docstring; ``min_snr_gamma`` for ``"min_snr"``, ``snr_power`` for ``"snr_pow"``).

    ``schedule`` is needed by :meth:`loss` only; callers that noise the data themselves (Matryoshka
    Diffusion's per-resolution schedules, f-DM's stages) use :meth:`prediction_loss` and
    :meth:`weights` with their own ``alpha, sigma``."""

    schedule: NoiseSchedule | None = None
    parameterization: str = "eps"
    weighting: str = "native"
    min_snr_gamma: float = 5.0
    snr_power: float = 0.5

    def __post_init__(self):
        _check(self.parameterization)
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"unknown loss weighting '{self.weighting}' (use one of {WEIGHTINGS})")

    def weights(self, snr: torch.Tensor) -> torch.Tensor:
        """Per-sample x0-space weight of the loss at signal-to-noise ratio ``snr``."""
        w = self.weighting
        if w == "native":
            return native_weight(snr, self.parameterization)
        if w in PARAMETERIZATIONS:
            return native_weight(snr, w)
        if w == "min_snr":
            return snr.clamp(max=self.min_snr_gamma)
        return snr.pow(self.snr_power)

    def prediction_loss(self, pred: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, alpha,
                        sigma, reduce: bool = True) -> torch.Tensor:
        """Weighted MSE of a native prediction ``pred`` against its target for the noisy sample
        ``alpha x0 + sigma eps``: ``mse * weights(snr) / native_weight(snr)`` per sample (plain
        MSE for ``"native"``). ``alpha``/``sigma`` are ``[B]`` or broadcastable to ``x0``; the SNR
        is taken in their precision (pass the schedule's float64 values for the exact weight).
        Returns the mean, or per-sample ``[B]`` if not ``reduce``."""
        a, s = _bc(alpha, x0), _bc(sigma, x0)
        tgt = target(self.parameterization, x0, eps, a, s)
        per = (pred.float() - tgt.float()).pow(2).flatten(1).mean(1)
        if self.weighting != "native":
            snr = torch.as_tensor(alpha) ** 2 / torch.as_tensor(sigma) ** 2
            snr = snr.to(per.dtype).to(per.device)
            if snr.ndim > 1:
                snr = snr.flatten(1).mean(1)
            snr = snr.expand_as(per)
            per = per * self.weights(snr) / native_weight(snr, self.parameterization)
        return per.mean() if reduce else per

    def loss(self, model: Callable, x0: torch.Tensor, generator: torch.Generator | None = None,
             t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
             reduce: bool = True, **cond) -> torch.Tensor:
        """Denoising loss of ``x0 [B, ...]``; ``model(x_t, t[B], **cond)`` predicts
        ``parameterization``. Draws ``t = schedule.sample_t(B)`` and then ``noise ~ N(0, I)``
        from ``generator`` (each only if not given). Returns the mean, or ``[B]`` if not
        ``reduce``; gradients flow into ``model`` and ``x0``."""
        if self.schedule is None:
            raise ValueError("DiffusionObjective.loss needs a schedule")
        if t is None:
            t = self.schedule.sample_t(x0.shape[0], generator=generator, device=x0.device)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
        alpha, sigma = self.schedule.alpha_sigma(t.double().cpu())  # float64 [B] on the CPU
        x_t = _bc(alpha, x0) * x0 + _bc(sigma, x0) * noise
        pred = model(x_t, t.to(x0.device, torch.float32), **cond)
        return self.prediction_loss(pred, x0, noise, alpha, sigma, reduce)


def diffusion_loss(model: Callable, x0: torch.Tensor, schedule: NoiseSchedule,
                   parameterization: str = "eps", weighting: str = "native",
                   min_snr_gamma: float = 5.0, generator: torch.Generator | None = None,
                   t: torch.Tensor | None = None, noise: torch.Tensor | None = None,
                   **cond) -> torch.Tensor:
    """Mean denoising loss: ``DiffusionObjective(schedule, parameterization, weighting,
    min_snr_gamma).loss(model, x0, generator, t, noise, **cond)``."""
    objective = DiffusionObjective(schedule, parameterization, weighting, min_snr_gamma)
    return objective.loss(model, x0, generator, t, noise, **cond)
