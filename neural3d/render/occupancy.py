"""Empty-space skipping: :class:`OccupancyGridSampler`, an occupancy grid over a box that marches
rays with a fixed step through its occupied cells (packed samples) and refreshes itself from the
field's density (its update rule); :class:`OccupiedSpanSampler`, a fixed number of padded samples
per ray spread over the occupied part of the ray in one of a batch of grids (auto-decoders that
render several objects at once); plus the visual-hull helpers that initialise a grid from posed
images (:func:`visual_hull`, :func:`grid_bounds`).

Everything is created on the device of the rays / the grid's buffers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from neural3d.render.samplers import RaySamples, near_far_aabb, sample_pdf, uniform


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
    dev = images.device
    lin = [(torch.arange(res, device=dev) + 0.5) / res * (hi[i] - lo[i]) + lo[i]
           for i in range(3)]
    pts = torch.stack(torch.meshgrid(*lin, indexing="ij"), -1).reshape(-1, 3)
    occ = torch.ones(pts.shape[0], dtype=torch.bool, device=dev)
    for s in range(0, pts.shape[0], chunk):
        p = pts[s:s + chunk]
        uv, z = cameras.project(p)  # [V, P, 2], [V, P]
        u, v = uv[..., 0].floor().long(), uv[..., 1].floor().long()
        inside = (z > 0) & (u >= 0) & (u < W) & (v >= 0) & (v < H)
        vi = torch.arange(V, device=u.device)[:, None].expand_as(u)
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
    lo_i = (idx.min(0).values - margin_cells).clamp(min=0).float().to(aabb.device)
    hi_i = (idx.max(0).values + 1 + margin_cells).clamp(max=res).float().to(aabb.device)
    size = (aabb[3:] - aabb[:3]) / res
    return torch.cat([aabb[:3] + lo_i * size, aabb[:3] + hi_i * size])


def cell_index(pts: torch.Tensor, aabb: torch.Tensor, res: int) -> torch.Tensor:
    """Integer cell ``[..., 3]`` of a ``[res]^3`` grid over ``aabb [6]`` holding each of ``pts
    [..., 3]`` (clamped to the grid)."""
    return ((pts - aabb[:3]) / ((aabb[3:] - aabb[:3]) / res)).floor().long().clamp(0, res - 1)


def density_threshold(alpha: float, step: float) -> float:
    """The density whose sample of length ``step`` has opacity ``alpha``:
    ``-log(1 - alpha) / step``."""
    return -math.log(1.0 - alpha) / step


class OccupancyGridSampler(nn.Module):
    """Occupancy bitfield ``[G]^3`` over ``aabb``, and the packed sampler that marches it.

    Buffers (checkpointed with the owning model): ``aabb [6]``, ``hull [G]^3`` (what can ever be
    occupied, e.g. a :func:`visual_hull`; default: everything), ``occ [G]^3`` (the current
    occupancy, starts as the hull) and ``density_ema [G]^3``.

    Sampling (the :class:`~neural3d.render.samplers.Sampler` protocol): uniform steps of length
    ``step`` inside ``aabb`` (intersected with the given ``near``/``far``/``hit``), the sample
    ``k`` of a ray at ``t = near + (k + u) * step``, kept only when ``t < far`` and its cell is
    occupied; at most ``max_samples`` steps per ray (None: as many as the longest ray needs).
    ``u`` is 0.5 without jitter, a per-ray uniform with it (a ``jitter`` tensor is ``u [R]``).
    Returns packed :class:`~neural3d.render.samplers.RaySamples` with the positions.

    Update rule: :meth:`update` keeps hull cells whose EMA density (max over one random point
    per cell) exceeds a threshold; :meth:`update_every_n_steps` is ``neural3d fit``'s schedule.
    """

    def __init__(self, aabb: torch.Tensor, res: int = 64, hull: torch.Tensor | None = None,
                 step: float = 0.01, max_samples: int | None = None):
        super().__init__()
        if step <= 0:
            raise ValueError(f"OccupancyGridSampler: step must be > 0, got {step}")
        self.res, self.step, self.max_samples = res, float(step), max_samples
        aabb = torch.as_tensor(aabb)
        self.register_buffer("aabb", aabb.clone().float())
        hull = (torch.ones(res, res, res, dtype=torch.bool, device=aabb.device) if hull is None
                else hull.bool())
        self.register_buffer("hull", hull)
        self.register_buffer("occ", hull.clone())
        self.register_buffer("density_ema", torch.full((res, res, res), 1e3,
                                                       device=hull.device))

    def cell_size(self) -> torch.Tensor:
        return (self.aabb[3:] - self.aabb[:3]) / self.res

    def lookup(self, pts: torch.Tensor) -> torch.Tensor:
        """Occupancy ``[...]`` of the cells holding ``pts [..., 3]`` (clamped to the grid)."""
        idx = cell_index(pts, self.aabb, self.res)
        return self.occ[idx[..., 0], idx[..., 1], idx[..., 2]]

    @torch.no_grad()
    def update(self, density_fn, threshold: float, generator: torch.Generator | None = None,
               decay: float = 0.8, chunk: int = 131072) -> float:
        """Refresh from ``density_fn(points [N,3]) -> [N]`` (points on the grid's device);
        a cell is occupied when its EMA density exceeds ``threshold`` (then dilated by one
        cell, within the hull). Returns the occupied fraction."""
        cells = self.hull.nonzero()
        size = self.cell_size()
        dens = torch.empty(cells.shape[0], device=cells.device)
        for s in range(0, cells.shape[0], chunk):
            c = cells[s:s + chunk].float()
            p = self.aabb[:3] + (c + uniform(c.shape, generator, device=c.device)) * size
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

    def update_every_n_steps(self, step: int, density_fn, generator: torch.Generator | None
                             = None, *, every: int = 16, warmup: int = 128, alpha: float = 0.005,
                             decay: float = 0.8) -> float | None:
        """``neural3d fit``'s schedule: at training steps ``>= warmup`` that are multiples of
        ``every``, :meth:`update` with the density at which one step has opacity ``alpha``.
        Returns the occupied fraction when it refreshed, else None."""
        if step < warmup or step % every:
            return None
        return self.update(density_fn, density_threshold(alpha, self.step), generator, decay)

    def forward(self, origins: torch.Tensor, directions: torch.Tensor,
                near: torch.Tensor | None = None, far: torch.Tensor | None = None,
                hit: torch.Tensor | None = None, *, jitter: bool | torch.Tensor = False,
                generator: torch.Generator | None = None, weights_fn=None) -> RaySamples:
        near_b, far_b, hit_b = near_far_aabb(origins, directions, self.aabb)
        near = near_b if near is None else torch.maximum(near_b, near)
        far = far_b if far is None else torch.minimum(far_b, far)
        hit = hit_b if hit is None else hit_b & hit
        span = torch.where(hit, far - near, torch.zeros_like(far)).clamp_min(0)
        n_max = int(math.ceil(float(span.max()) / self.step)) if hit.any() else 1
        if self.max_samples is not None:
            n_max = min(n_max, self.max_samples)
        n_max = max(n_max, 1)
        r, dev = origins.shape[0], origins.device
        k = torch.arange(n_max, dtype=origins.dtype, device=dev)
        if torch.is_tensor(jitter):
            off = jitter.to(device=dev, dtype=origins.dtype)[:, None]
        elif jitter:
            off = uniform((r,), generator, origins.dtype, dev)[:, None]
        else:
            off = 0.5
        t = near[:, None] + (k[None, :] + off) * self.step  # [R, S]
        valid = (t < far[:, None]) & hit[:, None]
        pos = origins[:, None, :] + directions[:, None, :] * t[..., None]
        valid &= self.lookup(pos)
        counts = valid.sum(1)
        offsets = torch.cumsum(counts, 0) - counts
        ray_indices = torch.arange(r, device=dev)[:, None].expand_as(valid)[valid]
        tm = t[valid]
        half = 0.5 * self.step
        return RaySamples(tm - half, tm + half, ray_indices=ray_indices, offsets=offsets,
                          counts=counts, positions=pos[valid])


def grid_cells(grids: torch.Tensor, aabb: torch.Tensor, pts: torch.Tensor,
               which: torch.Tensor) -> torch.Tensor:
    """Values of ``grids [B, G, G, G]`` (over ``aabb [6]``) at the cells holding ``pts [R, K,
    3]``, ray ``r`` reading grid ``which[r]`` -> ``[R, K]`` (points clamped to the grid)."""
    idx = cell_index(pts, aabb, grids.shape[-1])
    return grids[which[:, None], idx[..., 0], idx[..., 1], idx[..., 2]]


class OccupiedSpanSampler:
    """``n_samples`` padded samples per ray, spread evenly over the part of the ray that lies in
    occupied cells of its object's grid; a batch of objects rendered at once.

    ``grids [B, G, G, G]`` (bool) over ``aabb [6]``; the ``R`` rays come as ``B`` equal groups,
    ray ``r`` belonging to grid ``r // (R / B)``. Each ray's ``[near, far]`` (intersected with
    ``aabb``) is cut into ``bins`` equal bins and a bin counts as occupied when its midpoint's
    cell is; the ``n_samples`` sample points sit at ``(k + u) / n_samples`` of the occupied
    length ``L`` (``u`` = 0.5, or one uniform per ray with jitter; a ``jitter`` tensor is ``u
    [R]``) and each interval is ``L / n_samples`` long, centred on its point: empty space is
    skipped (given zero density), as a ray marcher over the grid does. Without occupied bins a
    ray is a miss (``hit`` False, zero-length intervals). With every cell occupied this is
    stratified sampling with one offset per ray.
    """

    def __init__(self, grids: torch.Tensor, aabb, n_samples: int, bins: int = 256):
        if grids.dim() != 4 or not grids.shape[1] == grids.shape[2] == grids.shape[3]:
            raise ValueError(f"OccupiedSpanSampler: grids must be [B, G, G, G], got "
                             f"{tuple(grids.shape)}")
        if n_samples < 1 or bins < 1:
            raise ValueError(f"OccupiedSpanSampler: n_samples and bins must be >= 1, got "
                             f"{n_samples}, {bins}")
        self.grids, self.n_samples, self.bins = grids.bool(), n_samples, bins
        self.aabb = torch.as_tensor(aabb, dtype=torch.float32, device=grids.device)

    def __call__(self, origins, directions, near, far, hit=None, *, jitter=False,
                 generator=None, weights_fn=None) -> RaySamples:
        r, dev, dt = origins.shape[0], origins.device, origins.dtype
        b = self.grids.shape[0]
        if r % b:
            raise ValueError(f"OccupiedSpanSampler: {r} rays do not split into {b} equal groups "
                             "(one per grid)")
        aabb = self.aabb.to(device=dev, dtype=dt)
        near_b, far_b, hit_b = near_far_aabb(origins, directions, aabb)
        near, far = torch.maximum(near_b, near), torch.minimum(far_b, far)
        hit = hit_b if hit is None else hit_b & hit
        span = torch.where(hit, far - near, torch.zeros_like(far)).clamp_min(0)
        edges = near[:, None] + span[:, None] * torch.linspace(0, 1, self.bins + 1, dtype=dt,
                                                               device=dev)
        mids = 0.5 * (edges[:, 1:] + edges[:, :-1])
        which = torch.arange(r, device=dev) // (r // b)
        occupied = grid_cells(self.grids.to(dev), aabb,
                              origins[:, None] + directions[:, None] * mids[..., None], which)
        occupied = occupied.to(dt)
        length = occupied.sum(-1) * span / self.bins  # [R]
        if torch.is_tensor(jitter):
            u = jitter.to(device=dev, dtype=dt)[:, None]
        elif jitter:
            u = uniform((r, 1), generator, dt, dev)
        else:
            u = torch.full((r, 1), 0.5, dtype=dt, device=dev)
        k = torch.arange(self.n_samples, dtype=dt, device=dev)
        quantiles = ((k + u) / self.n_samples).clamp(0, 1)
        t = sample_pdf(edges, occupied, self.n_samples, uniforms=quantiles, eps=1e-9)
        hit = hit & (length > 0)
        half = torch.where(hit, 0.5 * length / self.n_samples, torch.zeros_like(length))
        return RaySamples(t - half[:, None], t + half[:, None], hit=hit)
