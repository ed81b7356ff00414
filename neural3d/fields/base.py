"""Shared pieces of the fields: the bounding box, activations, total variation, the base class
(with the optimiser groups and regularisers every field offers)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class _TruncExp(torch.autograd.Function):
    """``exp`` whose gradient is clamped (instant-NGP's ``trunc_exp``) for stable density."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        ctx.save_for_backward(x)
        return torch.exp(x)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        (x,) = ctx.saved_tensors
        return g * torch.exp(x.clamp(max=15.0))


def trunc_exp(x: torch.Tensor) -> torch.Tensor:
    return _TruncExp.apply(x)


def density_activation(x: torch.Tensor, kind: str) -> torch.Tensor:
    """Raw network output -> density >= 0. ``softplus`` (shifted by -1) or ``trunc_exp``."""
    if kind == "softplus":
        return nn.functional.softplus(x - 1.0)
    if kind == "trunc_exp":
        return trunc_exp(x.clamp(max=15.0))
    if kind == "relu":
        return torch.relu(x)
    raise ValueError(f"unknown density activation {kind!r} (softplus, trunc_exp, relu)")


def widened_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """Raw colour -> ``[-0.001, 1.001]``: a slightly widened sigmoid (as in Mip-NeRF) lets pure
    white and black be reached with finite outputs."""
    return torch.sigmoid(x) * 1.002 - 0.001


def tv_loss(x: torch.Tensor) -> torch.Tensor:
    """Total variation of planes/images ``[..., H, W]``: the mean squared difference of vertical
    neighbours plus that of horizontal neighbours (a scalar). A smoothness regulariser for
    triplanes and triplane latents."""
    return ((x[..., 1:, :] - x[..., :-1, :]) ** 2).mean() + \
        ((x[..., :, 1:] - x[..., :, :-1]) ** 2).mean()


def normalize_aabb(positions: torch.Tensor, aabb: torch.Tensor) -> torch.Tensor:
    """World positions ``[..., 3]`` -> ``[-1, 1]^3`` inside ``aabb [6]`` (min xyz, max xyz)."""
    lo, hi = aabb[:3], aabb[3:]
    return (positions - lo) / (hi - lo) * 2.0 - 1.0


class Field(nn.Module):
    """Base of all fields: owns the box and the masking of points outside it, and says how its
    parameters are optimised (:meth:`param_groups`) and regularised (:meth:`regularizers`)."""

    def __init__(self, aabb: Sequence[float] = (-1, -1, -1, 1, 1, 1)):
        super().__init__()
        aabb_t = torch.as_tensor(list(aabb), dtype=torch.float32)
        if aabb_t.shape != (6,) or not bool((aabb_t[3:] > aabb_t[:3]).all()):
            raise ValueError(f"aabb must be [xmin, ymin, zmin, xmax, ymax, zmax], got {aabb}")
        self.register_buffer("aabb", aabb_t, persistent=True)

    def inside(self, xn: torch.Tensor) -> torch.Tensor:
        """Mask ``[...]`` of normalised points inside ``[-1, 1]^3``."""
        return (xn.abs() <= 1.0).all(dim=-1)

    @staticmethod
    def check_inputs(positions: torch.Tensor) -> None:
        if positions.shape[-1] != 3:
            raise ValueError("positions must end in 3 coordinates, got shape "
                             f"{tuple(positions.shape)}")

    def table_parameters(self) -> list[nn.Parameter]:
        """The big feature tables (triplanes, hash-grid embeddings), trained at a higher learning
        rate than the networks. None in the base class."""
        return []

    def param_groups(self, lr: float | None = None, table_lr: float | None = None
                     ) -> list[dict]:
        """Optimiser parameter groups covering every parameter exactly once, in
        ``self.parameters()`` order: ``{"name": "networks", "params": [...], "lr": lr}`` and, when
        the field has tables, ``{"name": "tables", "params": [...], "lr": table_lr}``. An ``lr``
        left at None is left out of its group (the optimiser's default applies)."""
        tables = {id(p) for p in self.table_parameters()}
        groups = [("networks", [p for p in self.parameters() if id(p) not in tables], lr),
                  ("tables", [p for p in self.parameters() if id(p) in tables], table_lr)]
        return [{"name": name, "params": params, **({} if rate is None else {"lr": rate})}
                for name, params, rate in groups if params or name == "networks"]

    def regularizers(self) -> dict[str, torch.Tensor]:
        """Weighted regularisation terms (scalars) to add to the training loss, by name; their
        weights come from the field's config. None in the base class."""
        return {}
