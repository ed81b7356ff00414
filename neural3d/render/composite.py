"""Emission-absorption compositing: the public face of the kernels in ``cuda/``.

``composite`` (padded ``[R, S]``), ``composite_packed`` (flat samples with per-ray offsets and
counts) and ``composite_alphas`` (per-sample opacities instead of densities) dispatch to the CUDA
kernel, the C++ CPU kernel or the torch reference (see :mod:`neural3d.render.backend`).

Gradients flow to densities/alphas, features and the background. The fused kernels treat the
sample intervals as constants; if ``t_starts``/``t_ends`` require grad, the torch reference is used.
The fused backward recomputes transmittance (nothing per-sample is stored) and uses the suffix
("remaining colour") form of the gradient.

``depth`` is the expected termination distance ``sum_i w_i (t0_i + t1_i)/2`` (not divided by
opacity; divide by ``opacity`` for the depth of the surface alone).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from neural3d.render import backend as _backend
from neural3d.render.reference import composite_packed_reference, composite_padded_reference


@dataclass
class CompositeResult:
    features: torch.Tensor  # [R, C], background included
    depth: torch.Tensor  # [R]
    opacity: torch.Tensor  # [R]
    weights: torch.Tensor | None = None  # [R, S] (packed: [N]) when requested
    backend: str = "torch"


class _FusedComposite(torch.autograd.Function):
    """The fused kernel as one autograd node; the background blend ``out + (1 - opacity) * bg``
    is folded in (its gradient is two small tensor ops), so no extra graph nodes are recorded."""

    @staticmethod
    def forward(ctx, ext, sigmas, t_starts, t_ends, features, offsets, counts, stop_eps,
                unit_delta, want_weights, background):
        out, depth, opacity, weights = ext.composite_forward(
            sigmas, t_starts, t_ends, features, offsets, counts, stop_eps, unit_delta,
            want_weights)
        ctx.ext = ext
        ctx.stop_eps = stop_eps
        ctx.unit_delta = unit_delta
        ctx.want_weights = want_weights
        ctx.set_materialize_grads(False)
        ctx.save_for_backward(sigmas, t_starts, t_ends, features, offsets, counts, out, depth,
                              opacity, background)
        if not want_weights:
            ctx.mark_non_differentiable(weights)
        return _blend_background(out, opacity, background), depth, opacity, weights

    @staticmethod
    def backward(ctx, g_out, g_depth, g_opacity, g_weights):
        sigmas, t_starts, t_ends, features, offsets, counts, out, depth, opacity, bg = (
            ctx.saved_tensors)
        if g_out is None and g_depth is None and g_opacity is None and g_weights is None:
            return (None,) * 11
        g_out = torch.zeros_like(out) if g_out is None else g_out.contiguous()
        g_depth = torch.zeros_like(depth) if g_depth is None else g_depth.contiguous()
        g_opacity = torch.zeros_like(opacity) if g_opacity is None else g_opacity
        grad_bg = None
        if bg is not None:
            # out_bg = out + (1 - opacity) bg: opacity's cotangent loses <g_out, bg>
            g_opacity = g_opacity - (g_out * bg).sum(-1)
            if ctx.needs_input_grad[10]:
                grad_bg = (g_out * (1.0 - opacity)[:, None]).sum_to_size(bg.shape)
        g_opacity = g_opacity.contiguous()
        if g_weights is not None and ctx.want_weights:
            g_weights = g_weights.contiguous()
        else:
            g_weights = None
        grad_sigmas, grad_features = ctx.ext.composite_backward(
            sigmas, t_starts, t_ends, features, offsets, counts, out, depth, opacity,
            g_out, g_depth, g_opacity, g_weights, ctx.stop_eps, ctx.unit_delta)
        return (None, grad_sigmas, None, None, grad_features, None, None, None, None, None,
                grad_bg)


def _blend_background(out: torch.Tensor, opacity: torch.Tensor,
                      bg: torch.Tensor | None) -> torch.Tensor:
    """``out + (1 - opacity) bg`` for flat ``out [R, C]``, ``opacity [R]`` (``bg`` from
    :func:`_flat_background`; None: black)."""
    if bg is None:
        return out
    return torch.addcmul(out, (1.0 - opacity)[:, None], bg)


def _flat_background(background, lead: tuple, c: int, dtype, device) -> torch.Tensor | None:
    """The background as a tensor broadcastable to the flat ``[R, C]`` outputs."""
    if background is None:
        return None
    bg = torch.as_tensor(background, dtype=dtype, device=device)
    if bg.dim() > 1:  # per-ray backgrounds [..., C] follow the rays' leading dims
        bg = bg.expand(*lead, c).reshape(-1, c)
    return bg


def _run(sigmas, t_starts, t_ends, features, offsets, counts, stop_eps, unit_delta,
         return_weights, backend, background, lead):
    """Composite flat rays (padded ``[R, S]`` or packed); returns ``(features [R, C] with the
    background blended, depth, opacity, weights or None, backend name)``. ``lead`` are the
    caller's leading ray dims (``R = prod(lead)``), for per-ray backgrounds."""
    device = sigmas.device
    name, ext = _backend.select(device, backend)
    dtype = torch.promote_types(sigmas.dtype, features.dtype)
    fused_ok = (
        ext is not None
        and not (t_starts.requires_grad or t_ends.requires_grad)
        and features.device == device
    )
    if fused_ok:
        compute = dtype if dtype in (torch.float32, torch.float64) else torch.float32
        args = [x.to(compute).contiguous() for x in (sigmas, t_starts, t_ends, features)]
        if offsets is not None:
            offsets = offsets.to(device=device, dtype=torch.int64).contiguous()
            counts = counts.to(device=device, dtype=torch.int64).contiguous()
        bg = _flat_background(background, lead, features.shape[-1], compute, device)
        out, depth, opacity, weights = _FusedComposite.apply(
            ext, *args, offsets, counts, float(stop_eps), bool(unit_delta),
            bool(return_weights), bg)
        if compute != dtype:
            out, depth, opacity, weights = (x.to(dtype) for x in (out, depth, opacity, weights))
        return out, depth, opacity, (weights if return_weights else None), name
    if offsets is None:
        res = composite_padded_reference(sigmas, t_starts, t_ends, features, stop_eps,
                                         unit_delta)
    else:
        res = composite_packed_reference(sigmas, t_starts, t_ends, features, offsets, counts,
                                         stop_eps, unit_delta)
    out, depth, opacity, weights = res
    bg = _flat_background(background, lead, features.shape[-1], out.dtype, device)
    out = _blend_background(out, opacity, bg)
    return out, depth, opacity, (weights if return_weights else None), "torch"


def _intervals_from_deltas(deltas: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    ends = torch.cumsum(deltas, dim=-1)
    starts = F.pad(ends[..., :-1], (1, 0))
    return starts, ends


def composite(
    densities: torch.Tensor,
    features: torch.Tensor,
    t_starts: torch.Tensor | None = None,
    t_ends: torch.Tensor | None = None,
    background=None,
    return_weights: bool = False,
    *,
    deltas: torch.Tensor | None = None,
    stop_eps: float = 0.0,
    backend: str | None = None,
) -> CompositeResult:
    """Composite padded samples.

    Args:
        densities: ``[R, S]`` (any leading dims ``[..., S]``), non-negative.
        features: ``[R, S, C]`` colours or features, any ``C``.
        t_starts, t_ends: ``[R, S]`` sample intervals; or give ``deltas`` ``[R, S]`` instead
            (intervals are then laid end to end from 0).
        background: None (black/zero), a float, ``[C]`` or ``[R, C]``.
        return_weights: also return the per-sample weights ``[R, S]`` (differentiable).
        stop_eps: early ray termination: samples with transmittance below it contribute nothing
            (0 = off). Identical in forward and backward.
        backend: force ``"torch"``, ``"cpp"`` or ``"cuda"`` (default: ``$NEURAL3D_BACKEND`` or
            automatic).
    """
    if t_starts is None or t_ends is None:
        if deltas is None:
            raise ValueError("composite: give t_starts and t_ends, or deltas")
        t_starts, t_ends = _intervals_from_deltas(deltas)
    return _composite_padded(densities, features, t_starts, t_ends, background, return_weights,
                             stop_eps, backend, unit_delta=False)


def composite_alphas(
    alphas: torch.Tensor,
    features: torch.Tensor,
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    background=None,
    return_weights: bool = False,
    *,
    stop_eps: float = 0.0,
    backend: str | None = None,
) -> CompositeResult:
    """Composite per-sample opacities ``alphas [R, S]`` in ``[0, 1]`` (intervals give depth only).

    Alphas are turned into optical depths ``-log(1 - alpha)`` (alpha clamped below 1 - 1e-6).
    """
    tau = -torch.log1p(-alphas.clamp(0.0, 1.0 - 1e-6))
    return _composite_padded(tau, features, t_starts, t_ends, background, return_weights,
                             stop_eps, backend, unit_delta=True)


def _composite_padded(densities, features, t_starts, t_ends, background, return_weights,
                      stop_eps, backend, unit_delta) -> CompositeResult:
    if densities.shape != t_starts.shape or densities.shape != t_ends.shape:
        raise ValueError(f"composite: densities {tuple(densities.shape)}, t_starts "
                         f"{tuple(t_starts.shape)} and t_ends {tuple(t_ends.shape)} must match")
    if features.shape[:-1] != densities.shape:
        raise ValueError(f"composite: features {tuple(features.shape)} must be densities' shape "
                         f"{tuple(densities.shape)} + [C]")
    lead, s, c = densities.shape[:-1], densities.shape[-1], features.shape[-1]
    flat = densities.dim() == 2  # already [R, S]: no view nodes in the autograd graph
    if not flat:
        densities, t_starts, t_ends = (x.reshape(-1, s) for x in (densities, t_starts, t_ends))
        features = features.reshape(-1, s, c)
    out, depth, opacity, weights, name = _run(
        densities, t_starts, t_ends, features, None, None, stop_eps, unit_delta,
        return_weights, backend, background, lead)
    if not flat:
        out, depth, opacity = out.reshape(*lead, c), depth.reshape(lead), opacity.reshape(lead)
        weights = None if weights is None else weights.reshape(*lead, s)
    return CompositeResult(features=out, depth=depth, opacity=opacity, weights=weights,
                           backend=name)


def composite_packed(
    densities: torch.Tensor,
    features: torch.Tensor,
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    offsets: torch.Tensor,
    counts: torch.Tensor,
    background=None,
    return_weights: bool = False,
    *,
    stop_eps: float = 0.0,
    backend: str | None = None,
) -> CompositeResult:
    """Composite packed samples: ``densities, t_starts, t_ends [N]``, ``features [N, C]``; ray
    ``r`` owns samples ``offsets[r] .. offsets[r] + counts[r] - 1`` (``[R]`` integer tensors).
    Weights come back as ``[N]``."""
    n = densities.shape[0]
    if densities.dim() != 1 or t_starts.shape != (n,) or t_ends.shape != (n,):
        raise ValueError("composite_packed: densities, t_starts, t_ends must all be [N]")
    if features.dim() != 2 or features.shape[0] != n:
        raise ValueError(f"composite_packed: features must be [N, C], got "
                         f"{tuple(features.shape)}")
    if offsets.shape != counts.shape or offsets.dim() != 1:
        raise ValueError("composite_packed: offsets and counts must both be [R]")
    if counts.numel() and (int(counts.min()) < 0 or int((offsets + counts).max()) > n
                           or int(offsets.min()) < 0):
        raise ValueError("composite_packed: offsets/counts point outside the N samples")
    out, depth, opacity, weights, name = _run(
        densities, t_starts, t_ends, features, offsets, counts, stop_eps, False, return_weights,
        backend, background, (offsets.shape[0],))
    return CompositeResult(features=out, depth=depth, opacity=opacity, weights=weights,
                           backend=name)
