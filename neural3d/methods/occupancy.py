"""Empty-space skipping for single-object fitting: a visual hull from the training images and an
occupancy grid refined from the field's density, plus the packed ray marcher that uses it."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from neural3d.render.samplers import near_far_aabb


@torch.no_grad()
def visual_hull(images: torch.Tensor, cameras, background: torch.Tensor, aabb: torch.Tensor,
                res: int = 64, threshold: float = 0.03, min_votes: int = 2,
                vote_frac: float = 0.1, masks: torch.Tensor | None = None,
                chunk: int = 65536) -> torch.Tensor:
    """Boolean grid ``[res]^3`` over ``aabb``: a cell is empty when its centre projects onto
    background pixels in at least ``max(min_votes, vote_frac * views_that_see_it)`` views
    (background = ``masks < 0.5`` when given, else colour within ``threshold`` of ``background``).
    Tolerant to a few wrong pixels; cells seen by no view stay occupied.
    """
    V, H, W, _ = images.shape
    if masks is not None:
        bgmask = masks < 0.5
    else:
        bgmask = (images - background.view(1, 1, 1, 3)).abs().amax(-1) < threshold
    # dilate the foreground by one pixel (anti-aliased edges)
    fg = (~bgmask).float()[:, None]
    fg = F.max_pool2d(fg, 3, 1, 1)[:, 0] > 0
    lo, hi = aabb[:3], aabb[3:]
    lin = [(torch.arange(res) + 0.5) / res * (hi[i] - lo[i]) + lo[i] for i in range(3)]
    pts = torch.stack(torch.meshgrid(*lin, indexing="ij"), -1).reshape(-1, 3)
    occ = torch.ones(pts.shape[0], dtype=torch.bool)
    for s in range(0, pts.shape[0], chunk):
        p = pts[s:s + chunk]
        uv, z = cameras.project(p)  # [V, P, 2], [V, P]
        u, v = uv[..., 0].floor().long(), uv[..., 1].floor().long()
        inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        vi = torch.arange(V)[:, None].expand_as(u)
        is_fg = fg[vi, v.clamp(0, H - 1), u.clamp(0, W - 1)]
        bg_votes = (inside & ~is_fg).sum(0)
        seen = inside.sum(0)
        need = torch.clamp(vote_frac * seen.float(), min=float(min_votes))
        occ[s:s + chunk] = ~(bg_votes.float() >= need)
    grid = occ.reshape(res, res, res)
    # dilate by one cell: never cut the surface
    grid = F.max_pool3d(grid.float()[None, None], 3, 1, 1)[0, 0] > 0
    return grid


def grid_bounds(grid: torch.Tensor, aabb: torch.Tensor, margin_cells: int = 1) -> torch.Tensor:
    """Tight ``aabb [6]`` around the occupied cells of ``grid`` (plus a margin)."""
    res = grid.shape[0]
    idx = grid.nonzero()
    if idx.numel() == 0:
        return aabb.clone()
    lo_i = (idx.min(0).values - margin_cells).clamp(min=0).float()
    hi_i = (idx.max(0).values + 1 + margin_cells).clamp(max=res).float()
    size = (aabb[3:] - aabb[:3]) / res
    return torch.cat([aabb[:3] + lo_i * size, aabb[:3] + hi_i * size])


class OccupancyGrid(nn.Module):
    """Occupancy bitfield ``[G]^3`` over ``aabb`` (a buffer: checkpointed with the model).

    ``hull`` bounds what can ever be occupied; ``update(field)`` keeps hull cells whose
    EMA density (max over a few random points per cell) exceeds ``threshold``.
    """

    def __init__(self, aabb: torch.Tensor, res: int = 64, hull: torch.Tensor | None = None):
        super().__init__()
        self.res = res
        self.register_buffer("aabb", aabb.clone().float())
        hull = torch.ones(res, res, res, dtype=torch.bool) if hull is None else hull.bool()
        self.register_buffer("hull", hull)
        self.register_buffer("occ", hull.clone())
        self.register_buffer("density_ema", torch.full((res, res, res), 1e3))

    def cell_size(self) -> torch.Tensor:
        return (self.aabb[3:] - self.aabb[:3]) / self.res

    def lookup(self, pts: torch.Tensor) -> torch.Tensor:
        idx = ((pts - self.aabb[:3]) / self.cell_size()).floor().long().clamp(0, self.res - 1)
        return self.occ[idx[..., 0], idx[..., 1], idx[..., 2]]

    @torch.no_grad()
    def update(self, density_fn, threshold: float, generator: torch.Generator,
               decay: float = 0.8, chunk: int = 131072) -> float:
        """Refresh from ``density_fn(points [N,3]) -> [N]``; returns the occupied fraction."""
        cells = self.hull.nonzero()
        size = self.cell_size()
        dens = torch.empty(cells.shape[0])
        for s in range(0, cells.shape[0], chunk):
            c = cells[s:s + chunk].float()
            p = self.aabb[:3] + (c + torch.rand(c.shape, generator=generator)) * size
            dens[s:s + chunk] = density_fn(p)
        cur = self.density_ema[cells[:, 0], cells[:, 1], cells[:, 2]]
        new = torch.maximum(cur * decay, dens)
        self.density_ema[cells[:, 0], cells[:, 1], cells[:, 2]] = new
        occ = torch.zeros_like(self.occ)
        occ[cells[:, 0], cells[:, 1], cells[:, 2]] = new > threshold
        # dilate so that the surface is never cut by one-cell errors
        occ = (F.max_pool3d(occ.float()[None, None], 3, 1, 1)[0, 0] > 0) & self.hull
        self.occ.copy_(occ)
        return float(occ.float().mean())


def march(origins: torch.Tensor, dirs: torch.Tensor, grid: OccupancyGrid, step: float,
          jitter: torch.Tensor | None = None, max_samples: int | None = None):
    """Uniform steps of length ``step`` inside the box, kept only in occupied cells (packed).

    Returns ``positions [N,3], t_starts [N], t_ends [N], offsets [R], counts [R], ray_idx [N]``.
    ``jitter [R]`` in [0, 1) shifts the samples of each ray (training).
    """
    near, far, hit = near_far_aabb(origins, dirs, grid.aabb)
    span = (far - near).clamp_min(0)
    n_max = int(math.ceil(float(span.max()) / step)) if hit.any() else 1
    if max_samples is not None:
        n_max = min(n_max, max_samples)
    n_max = max(n_max, 1)
    k = torch.arange(n_max, dtype=origins.dtype)
    off = 0.5 if jitter is None else jitter[:, None]
    t = near[:, None] + (k[None, :] + off) * step  # [R, S]
    valid = (t < far[:, None]) & hit[:, None]
    pos = origins[:, None, :] + dirs[:, None, :] * t[..., None]
    valid &= grid.lookup(pos)
    counts = valid.sum(1)
    offsets = torch.cumsum(counts, 0) - counts
    ray_idx = torch.arange(origins.shape[0])[:, None].expand_as(valid)[valid]
    tm = t[valid]
    return pos[valid], tm - 0.5 * step, tm + 0.5 * step, offsets, counts, ray_idx
