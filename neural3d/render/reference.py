"""Pure-PyTorch reference of emission-absorption compositing.

This is the ground truth the fused kernels (``cuda/``) are tested against, and the fallback when
no kernel can be built. It is a fair implementation, not a deliberately slow one: exclusive
cumulative sum of optical depth in log space, ``expm1`` for the opacity of thin samples, and
autograd for the backward.

Model (per ray, samples ``i = 0..S-1`` with intervals ``[t0_i, t1_i]``)::

    tau_i   = sigma_i * (t1_i - t0_i)          (or tau_i = sigma_i when ``unit_delta``)
    T_i     = exp(-sum_{j<i} tau_j)            transmittance before sample i
    alpha_i = 1 - exp(-tau_i)
    w_i     = T_i * alpha_i                    weights
    features = sum_i w_i c_i,  depth = sum_i w_i (t0_i + t1_i) / 2,  opacity = sum_i w_i

With early termination (``stop_eps > 0``) a sample only contributes while ``T_i >= stop_eps``.
The background is blended in by the caller: ``out = features + (1 - opacity) * background``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def composite_padded_reference(
    sigmas: torch.Tensor,
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    features: torch.Tensor,
    stop_eps: float = 0.0,
    unit_delta: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Composite padded samples ``[R, S]`` / ``[R, S, C]``.

    Returns ``(features [R, C], depth [R], opacity [R], weights [R, S])`` without background.
    """
    tau = sigmas if unit_delta else sigmas * (t_ends - t_starts)
    # exclusive cumulative optical depth (log-space transmittance), accurate for long rays
    excl = F.pad(torch.cumsum(tau, dim=-1)[..., :-1], (1, 0))
    trans = torch.exp(-excl)
    weights = trans * -torch.expm1(-tau)
    if stop_eps > 0.0:
        weights = weights * (trans >= stop_eps).to(weights.dtype)
    mids = 0.5 * (t_starts + t_ends)
    out = torch.einsum("rs,rsc->rc", weights, features)
    depth = (weights * mids).sum(-1)
    opacity = weights.sum(-1)
    return out, depth, opacity, weights


def packed_to_padded(
    values: torch.Tensor, offsets: torch.Tensor, counts: torch.Tensor, fill: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scatter packed ``[N, ...]`` values into padded ``[R, S_max, ...]``; also return the mask."""
    n_rays = counts.shape[0]
    s_max = int(counts.max().item()) if n_rays > 0 else 0
    idx = torch.arange(s_max, device=values.device)
    mask = idx[None, :] < counts[:, None]
    src = (offsets[:, None] + idx[None, :])[mask]
    out = values.new_full((n_rays, s_max) + tuple(values.shape[1:]), fill)
    out[mask] = values[src]
    return out, mask


def composite_packed_reference(
    sigmas: torch.Tensor,
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    features: torch.Tensor,
    offsets: torch.Tensor,
    counts: torch.Tensor,
    stop_eps: float = 0.0,
    unit_delta: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Composite packed samples ``[N]`` / ``[N, C]`` with per-ray ``offsets``/``counts [R]``.

    Returns ``(features [R, C], depth [R], opacity [R], weights [N])``. Padding samples have zero
    density and zero-length intervals, so they contribute nothing.
    """
    s, mask = packed_to_padded(sigmas, offsets, counts)
    a, _ = packed_to_padded(t_starts, offsets, counts)
    b, _ = packed_to_padded(t_ends, offsets, counts)
    c, _ = packed_to_padded(features, offsets, counts)
    out, depth, opacity, w = composite_padded_reference(s, a, b, c, stop_eps, unit_delta)
    weights = sigmas.new_zeros(sigmas.shape)
    idx = torch.arange(mask.shape[1], device=sigmas.device)
    src = (offsets[:, None] + idx[None, :])[mask]
    weights = weights.index_put((src,), w[mask])
    return out, depth, opacity, weights
