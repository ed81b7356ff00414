"""Triplane sampling: the fused kernels (C++ CPU, CUDA) and their torch reference (grid_sample).

``triplane_sample(planes [B, 3, C, H, W], points [B, N, 3], aabb, aggregate)`` samples the three
planes (xy, xz, yz) bilinearly at each point and aggregates: ``sum`` and ``mean`` give
``[B, N, C]``, ``concat`` ``[B, N, 3C]`` (plane-major: plane 0's C channels first). Conventions
are those of the reference, :func:`triplane_reference`: plane ``p`` is indexed by the normalised
point's axes ``PLANE_AXES[p]``, the first as grid_sample's width coordinate; ``align_corners=
False``; ``padding_mode="border"`` (points outside the box take the border texels' values and
no gradient along a clipped axis, the border itself included, as grid_sample).

Backends: the same switch as compositing (:mod:`neural3d.render.backend`: ``backend=`` or
``NEURAL3D_BACKEND=torch|cpp|cuda``, else automatic), with the torch reference as the fallback
and for what the kernels do not cover (``aggregate="prod"``, ``mode`` other than bilinear).
The kernels give gradients to the planes and to the points (each only when it requires grad);
they are not twice differentiable (a ``create_graph`` backward through them raises): nothing in
neural3d needs it (the GAN's R1 penalty differentiates the discriminator w.r.t. images only).
Neither saves anything per sample for the backward. The CPU backward sums per-thread gradient
tiles (no atomics; deterministic for a given thread count); the CUDA one uses atomic adds, so
its plane gradient, like grid_sample's on CUDA, is not bit-reproducible run to run.

``triplane_linear(planes, points, weight, bias, ...)`` is ``F.linear`` of the sampled features:
a decoder's first layer fused behind the sampling (C++ only), so the ``[B, N, F]`` features are
neither written nor saved for the backward (which recomputes them for the weight gradient).
On CUDA, and where the sampling itself falls back, it is the sampling followed by ``F.linear``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from neural3d.fields.base import normalize_aabb
from neural3d.render import backend as _backend

PLANE_AXES = ((0, 1), (0, 2), (1, 2))
FUSED_AGGREGATES = {"sum": 0, "mean": 1, "concat": 2}


def _check(planes: torch.Tensor, points: torch.Tensor) -> None:
    if planes.dim() != 5 or planes.shape[1] != 3:
        raise ValueError(f"planes must be [B, 3, C, H, W], got {tuple(planes.shape)}")
    B = planes.shape[0]
    if points.dim() != 3 or points.shape[0] != B or points.shape[-1] != 3:
        raise ValueError(f"points must be [B={B}, N, 3], got {tuple(points.shape)}")


def triplane_reference(planes: torch.Tensor, xn: torch.Tensor, aggregate: str = "sum",
                       mode: str = "bilinear") -> torch.Tensor:
    """The torch reference: planes ``[B, 3, C, H, W]`` sampled with ``grid_sample`` at normalised
    points ``xn [B, N, 3]`` in ``[-1, 1]``; ``[B, N, C]`` (``sum``/``mean``/``prod``) or
    ``[B, N, 3C]`` (``concat``)."""
    _check(planes, xn)
    B, _, C, H, W = planes.shape
    grids = torch.stack([xn[..., list(a)] for a in PLANE_AXES], dim=1)  # [B, 3, N, 2]
    feats = F.grid_sample(planes.reshape(B * 3, C, H, W), grids.reshape(B * 3, 1, -1, 2),
                          mode=mode, padding_mode="border", align_corners=False)
    feats = feats.reshape(B, 3, C, -1).permute(0, 1, 3, 2)  # [B, 3, N, C]
    if aggregate == "sum":
        return feats.sum(1)
    if aggregate == "mean":
        return feats.mean(1)
    if aggregate == "prod":
        return feats.prod(1)
    if aggregate == "concat":
        return feats.permute(0, 2, 1, 3).reshape(B, -1, 3 * C)
    raise ValueError(f"unknown aggregate {aggregate!r} (sum, mean, prod, concat)")


class _FusedTriplane(torch.autograd.Function):
    """The fused kernel as one autograd node; saves only its inputs (no per-sample tensor)."""

    @staticmethod
    def forward(ctx, ext, planes, points, agg):
        ctx.ext, ctx.agg = ext, agg
        ctx.save_for_backward(planes, points)
        return ext.triplane_forward(planes, points, agg)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_out):
        planes, points = ctx.saved_tensors
        want_planes, want_points = ctx.needs_input_grad[1], ctx.needs_input_grad[2]
        if g_out is None or not (want_planes or want_points):
            return None, None, None, None
        g_planes, g_points = ctx.ext.triplane_backward(planes, points, g_out.contiguous(),
                                                       ctx.agg, want_planes, want_points)
        return None, g_planes, g_points, None


def triplane_sample(planes: torch.Tensor, points: torch.Tensor,
                    aabb: torch.Tensor | None = None, aggregate: str = "sum", *,
                    mode: str = "bilinear", backend: str | None = None) -> torch.Tensor:
    """Sample planes ``[B, 3, C, H, W]`` at ``points [B, N, 3]``: world coordinates inside
    ``aabb [6]`` (min xyz, max xyz), or already normalised to ``[-1, 1]`` when ``aabb`` is None.

    Returns ``[B, N, C]`` (``sum``, ``mean``, ``prod``) or ``[B, N, 3C]`` (``concat``). ``backend``
    forces ``"torch"``, ``"cpp"`` or ``"cuda"`` (default: ``$NEURAL3D_BACKEND`` or automatic).
    """
    _check(planes, points)
    xn = points if aabb is None else normalize_aabb(points, aabb)
    if mode == "bilinear" and aggregate in FUSED_AGGREGATES and planes.device == xn.device:
        _, ext = _backend.select(planes.device, backend)
        if ext is not None:
            dtype = torch.promote_types(planes.dtype, xn.dtype)
            compute = dtype if dtype in (torch.float32, torch.float64) else torch.float32
            out = _FusedTriplane.apply(ext, planes.to(compute), xn.to(compute).contiguous(),
                                       FUSED_AGGREGATES[aggregate])
            return out.to(dtype)
    return triplane_reference(planes, xn, aggregate, mode)


class _FusedTriplaneLinear(torch.autograd.Function):
    """Sampling and a linear layer as one autograd node (C++); saves only its inputs."""

    @staticmethod
    def forward(ctx, ext, planes, points, weight, bias, agg):
        ctx.ext, ctx.agg = ext, agg
        ctx.save_for_backward(planes, points, weight, bias)
        return ext.triplane_linear_forward(planes, points, agg, weight, bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, g_hidden):
        planes, points, weight, bias = ctx.saved_tensors
        wants = ctx.needs_input_grad[1:5]  # planes, points, weight, bias
        if g_hidden is None or not any(wants):
            return (None,) * 6
        grads = ctx.ext.triplane_linear_backward(planes, points, ctx.agg, weight, bias,
                                                 g_hidden.contiguous(), *wants)
        return (None, *grads, None)


def triplane_linear(planes: torch.Tensor, points: torch.Tensor, weight: torch.Tensor,
                    bias: torch.Tensor | None = None, aabb: torch.Tensor | None = None,
                    aggregate: str = "sum", *, backend: str | None = None) -> torch.Tensor:
    """``F.linear(triplane_sample(planes, points, aabb, aggregate), weight, bias)``: planes
    ``[B, 3, C, H, W]``, points ``[B, N, 3]``, ``weight [Hd, F]`` (``F = C``, or ``3C`` for
    ``concat``), ``bias [Hd]`` or None -> ``[B, N, Hd]``.

    With the C++ backend the layer is fused behind the sampling (module docstring); elsewhere,
    and for what the kernels do not cover, it is the two ops one after the other.
    """
    _check(planes, points)
    width = planes.shape[2] * (3 if aggregate == "concat" else 1)
    if weight.dim() != 2 or weight.shape[1] != width or (
            bias is not None and tuple(bias.shape) != (weight.shape[0],)):
        raise ValueError(f"triplane_linear: weight must be [hidden, {width}] and bias [hidden] "
                         f"for {aggregate} of {planes.shape[2]} channels, got "
                         f"{tuple(weight.shape)} and "
                         f"{None if bias is None else tuple(bias.shape)}")
    xn = points if aabb is None else normalize_aabb(points, aabb)
    if aggregate in FUSED_AGGREGATES and planes.device == xn.device == weight.device:
        _, ext = _backend.select(planes.device, backend)
        if ext is not None and hasattr(ext, "triplane_linear_forward"):
            dtype = torch.promote_types(torch.promote_types(planes.dtype, xn.dtype), weight.dtype)
            compute = dtype if dtype in (torch.float32, torch.float64) else torch.float32
            b = weight.new_zeros(weight.shape[0]) if bias is None else bias
            out = _FusedTriplaneLinear.apply(ext, planes.to(compute), xn.to(compute).contiguous(),
                                             weight.to(compute), b.to(compute),
                                             FUSED_AGGREGATES[aggregate])
            return out.to(dtype)
    return F.linear(triplane_sample(planes, xn, None, aggregate, backend=backend), weight, bias)
