"""What a denoiser predicts (``eps``, ``x0`` or ``v``), exact conversions, and the training loss.

With ``x_t = alpha x0 + sigma eps`` (``alpha^2 + sigma^2 = 1``) and ``v = alpha eps - sigma x0``
(Salimans & Ho 2022)::

    x0  = (x_t - sigma eps) / alpha   = alpha x_t - sigma v
    eps = (x_t - alpha x0) / sigma    = sigma x_t + alpha v
    v   = alpha eps - sigma x0        = (alpha x_t - x0) / sigma

Every conversion is affine in the prediction for a fixed ``x_t``, so classifier-free guidance
(an affine combination with weights summing to 1) gives the same result in any parameterisation.

Loss weighting. For one sample the three squared errors are proportional:
``|dx0|^2 : |deps|^2 : |dv|^2 = 1 : snr : (1 + snr)``. :func:`diffusion_loss` computes the MSE
of the network's *native* output and rescales it so that the effective weight in x0-space is

- ``"eps"``: ``snr``           (the DDPM "simple" loss, eps-MSE)
- ``"v"``: ``snr + 1``         (v-MSE)
- ``"x0"``: ``1``              (x0-MSE)
- ``"min_snr"``: ``min(snr, gamma)`` (Hang et al. 2023, min-SNR-gamma)
- ``"native"``: plain MSE of whatever the network predicts (same as the matching name above).
"""

from __future__ import annotations

import torch

PARAMETERIZATIONS = ("eps", "x0", "v")
WEIGHTINGS = ("native", "eps", "v", "x0", "min_snr")


def _check(kind: str) -> None:
    if kind not in PARAMETERIZATIONS:
        raise ValueError(f"unknown parameterization '{kind}' (use one of {PARAMETERIZATIONS})")


def to_x0(pred: torch.Tensor, kind: str, x_t: torch.Tensor, alpha, sigma) -> torch.Tensor:
    _check(kind)
    if kind == "x0":
        return pred
    if kind == "eps":
        return (x_t - sigma * pred) / alpha
    return alpha * x_t - sigma * pred


def to_eps(pred: torch.Tensor, kind: str, x_t: torch.Tensor, alpha, sigma) -> torch.Tensor:
    _check(kind)
    if kind == "eps":
        return pred
    if kind == "x0":
        return (x_t - alpha * pred) / sigma
    return sigma * x_t + alpha * pred


def to_v(pred: torch.Tensor, kind: str, x_t: torch.Tensor, alpha, sigma) -> torch.Tensor:
    _check(kind)
    if kind == "v":
        return pred
    if kind == "eps":
        return (pred - sigma * x_t) / alpha
    return (alpha * x_t - pred) / sigma


def convert(pred: torch.Tensor, src: str, dst: str, x_t: torch.Tensor, alpha, sigma):
    """Convert a prediction from parameterisation ``src`` to ``dst``."""
    _check(dst)
    return {"eps": to_eps, "x0": to_x0, "v": to_v}[dst](pred, src, x_t, alpha, sigma)


def target(kind: str, x0: torch.Tensor, eps: torch.Tensor, alpha, sigma) -> torch.Tensor:
    """The regression target of parameterisation ``kind``."""
    _check(kind)
    if kind == "eps":
        return eps
    if kind == "x0":
        return x0
    return alpha * eps - sigma * x0


def from_x0_eps(x0: torch.Tensor, eps: torch.Tensor, kind: str, alpha, sigma) -> torch.Tensor:
    """Express the pair (x0, eps) as a prediction of ``kind`` (used by guidance)."""
    return target(kind, x0, eps, alpha, sigma)


def loss_weight(snr: torch.Tensor, kind: str, weighting: str = "native",
                min_snr_gamma: float = 5.0) -> torch.Tensor:
    """Factor applied to the native-output MSE so that the x0-space weight is as documented."""
    _check(kind)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"unknown loss weighting '{weighting}' (use one of {WEIGHTINGS})")
    if weighting == "native":
        return torch.ones_like(snr)
    native = {"eps": snr, "x0": torch.ones_like(snr), "v": snr + 1}[kind]
    want = {"eps": snr, "x0": torch.ones_like(snr), "v": snr + 1,
            "min_snr": snr.clamp(max=min_snr_gamma)}[weighting]
    return want / native


def _bc(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Broadcast a per-sample ``[B]`` tensor (or one already shaped like ``x``) against ``x``."""
    v = torch.as_tensor(v, device=x.device)
    if v.ndim == 1 and x.ndim > 1 and v.shape[0] == x.shape[0]:
        v = v.reshape(-1, *([1] * (x.ndim - 1)))
    return v.to(x.dtype)


def prediction_loss(pred: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor, alpha, sigma,
                    kind: str, weighting: str = "native", min_snr_gamma: float = 5.0,
                    reduce: bool = True) -> torch.Tensor:
    """Weighted MSE of a native prediction against its target; per-sample ``[B]`` if not reduce.

    ``alpha``/``sigma`` are ``[B]`` (or broadcastable to ``x0``)."""
    a, s = _bc(alpha, x0), _bc(sigma, x0)
    tgt = target(kind, x0, eps, a, s)
    mse = (pred.float() - tgt.float()).pow(2).flatten(1).mean(1)
    snr = (torch.as_tensor(alpha) ** 2 / torch.as_tensor(sigma) ** 2).to(mse)
    if snr.ndim > 1:
        snr = snr.flatten(1).mean(1)
    per = mse * loss_weight(snr.expand_as(mse), kind, weighting, min_snr_gamma)
    return per.mean() if reduce else per


def diffusion_loss(model, x0: torch.Tensor, schedule, kind: str = "eps",
                   weighting: str = "native", min_snr_gamma: float = 5.0,
                   generator: torch.Generator | None = None, t: torch.Tensor | None = None,
                   noise: torch.Tensor | None = None, **cond) -> torch.Tensor:
    """Standard denoising loss: draw ``t`` and ``eps``, noise ``x0``, regress the native target.

    ``model(x_t, t, **cond)`` returns a prediction of parameterisation ``kind``."""
    b = x0.shape[0]
    if t is None:
        t = schedule.sample_t(b, generator=generator, device=x0.device)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype).to(x0.device)
    alpha, sigma = schedule.alpha_sigma(t.double().cpu())
    alpha, sigma = alpha.to(x0.device, torch.float32), sigma.to(x0.device, torch.float32)
    x_t = _bc(alpha, x0) * x0 + _bc(sigma, x0) * noise
    pred = model(x_t, t.to(x0.device, torch.float32), **cond)
    return prediction_loss(pred, x0, noise, alpha, sigma, kind, weighting, min_snr_gamma)
