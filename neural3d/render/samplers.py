"""Ray bounds and sample placement: ray/AABB and ray/sphere near-far, stratified sampling with
jitter, hierarchical importance sampling (inverse CDF) from weights; and the samplers built on
them, which all follow one protocol (:class:`Sampler`) and return :class:`RaySamples`.

The functional helpers return intervals as ``(t_starts, t_ends)`` of shape ``[R, S]``, laid end
to end. Randomness is explicit: pass a ``torch.Generator`` (or the uniforms themselves). A CPU
generator also serves rays on another device: the draws are made on the generator's device and
moved, so they are the same numbers as on the CPU.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F


def uniform(shape, generator: torch.Generator | None = None, dtype=torch.float32,
            device=None) -> torch.Tensor:
    """``U[0, 1)`` draws of ``shape`` on ``device``, from ``generator`` (drawn on its device)
    or, without one, from the global generator of ``device``."""
    where = generator.device if generator is not None else device
    return torch.rand(shape, generator=generator, dtype=dtype, device=where).to(device)


def near_far_aabb(
    origins: torch.Tensor, directions: torch.Tensor, aabb, min_near: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Slab test against ``aabb = (xmin, ymin, zmin, xmax, ymax, zmax)``.

    Returns ``near [R], far [R], hit [R] bool``; rays that miss get ``near = far = min_near``.
    """
    box = torch.as_tensor(aabb, dtype=origins.dtype, device=origins.device).reshape(2, 3)
    safe = torch.where(directions.abs() < 1e-12,
                       torch.full_like(directions, 1e-12) * torch.where(directions < 0, -1.0, 1.0),
                       directions)
    inv = 1.0 / safe
    t0 = (box[0] - origins) * inv
    t1 = (box[1] - origins) * inv
    near = torch.minimum(t0, t1).amax(-1).clamp_min(min_near)
    far = torch.maximum(t0, t1).amin(-1)
    hit = far > near
    near = torch.where(hit, near, torch.full_like(near, min_near))
    far = torch.where(hit, far, near)
    return near, far, hit


def near_far_sphere(
    origins: torch.Tensor, directions: torch.Tensor, radius: float = 1.0, center=(0.0, 0.0, 0.0),
    min_near: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Intersect rays with a sphere; returns ``near [R], far [R], hit [R] bool`` (misses get
    ``near = far = min_near``)."""
    c = torch.as_tensor(center, dtype=origins.dtype, device=origins.device)
    oc = origins - c
    a = (directions * directions).sum(-1)
    b = (directions * oc).sum(-1)
    cc = (oc * oc).sum(-1) - radius * radius
    disc = b * b - a * cc
    root = disc.clamp_min(0.0).sqrt()
    near = ((-b - root) / a).clamp_min(min_near)
    far = (-b + root) / a
    hit = (disc > 0) & (far > near)
    near = torch.where(hit, near, torch.full_like(near, min_near))
    far = torch.where(hit, far, near)
    return near, far, hit


def stratified_samples(
    near: torch.Tensor,
    far: torch.Tensor,
    n_samples: int,
    jitter: bool = False,
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_samples`` contiguous intervals covering ``[near, far]`` per ray.

    Without jitter the bins are uniform. With jitter each inner bin edge moves to a uniformly
    random point between the neighbouring bin centres (``generator`` or explicit ``uniforms
    [R, n_samples + 1]`` in [0, 1)), so every point of ``[near, far]`` can be sampled.
    """
    r = near.shape[0]
    edges = torch.linspace(0.0, 1.0, n_samples + 1, dtype=near.dtype, device=near.device)
    edges = edges.expand(r, n_samples + 1)
    if jitter:
        if uniforms is None:
            uniforms = uniform((r, n_samples + 1), generator, near.dtype, near.device)
        centres = 0.5 * (edges[:, 1:] + edges[:, :-1])
        lower = torch.cat([edges[:, :1], centres], -1)
        upper = torch.cat([centres, edges[:, -1:]], -1)
        edges = lower + (upper - lower) * uniforms
        edges = torch.cat([edges.new_zeros(r, 1), edges[:, 1:-1], edges.new_ones(r, 1)], -1)
    t = near[:, None] + (far - near)[:, None] * edges
    return t[:, :-1].contiguous(), t[:, 1:].contiguous()


def sample_pdf(
    bins: torch.Tensor,
    weights: torch.Tensor,
    n_samples: int,
    uniforms: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    deterministic: bool = False,
    eps: float = 1e-5,
) -> torch.Tensor:
    """Inverse-CDF sampling of the piecewise-constant pdf ``weights [R, S]`` over
    ``bins [R, S+1]``. Returns ``t [R, n_samples]``, sorted. Deterministic given ``uniforms
    [R, n_samples]`` (or ``deterministic=True``: evenly spaced quantiles)."""
    r, s = weights.shape
    w = weights.detach().clamp_min(0.0) + eps / s  # no empty pdf: uniform floor
    pdf = w / w.sum(-1, keepdim=True)
    cdf = F.pad(torch.cumsum(pdf, -1), (1, 0))
    cdf[:, -1] = 1.0
    if uniforms is None:
        if deterministic:
            uniforms = torch.linspace(0.0, 1.0, n_samples + 2, dtype=w.dtype,
                                      device=w.device)[1:-1].expand(r, n_samples)
        else:
            uniforms = uniform((r, n_samples), generator, w.dtype, w.device)
    u = uniforms.to(w.dtype).contiguous()
    idx = torch.searchsorted(cdf.contiguous(), u, right=True)
    below = (idx - 1).clamp(0, s - 1)
    above = idx.clamp(1, s) if s > 0 else idx
    above = torch.maximum(above, below + 1).clamp_max(s)
    cdf_lo, cdf_hi = cdf.gather(1, below), cdf.gather(1, above)
    bins_d = bins.detach()
    b_lo, b_hi = bins_d.gather(1, below), bins_d.gather(1, above)
    denom = cdf_hi - cdf_lo
    frac = torch.where(denom > 0, (u - cdf_lo) / denom.clamp_min(1e-12), torch.zeros_like(u))
    t = b_lo + frac.clamp(0.0, 1.0) * (b_hi - b_lo)
    return torch.sort(t, -1).values


def importance_samples(
    t_starts: torch.Tensor,
    t_ends: torch.Tensor,
    weights: torch.Tensor,
    n_samples: int,
    generator: torch.Generator | None = None,
    uniforms: torch.Tensor | None = None,
    deterministic: bool = False,
    include_original: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Hierarchical sampling: draw ``n_samples`` points from the coarse ``weights`` and return
    the new contiguous intervals ``(t_starts, t_ends)`` over the same ``[near, far]`` range;
    with ``include_original`` the coarse edges are kept, giving ``S + n_samples`` intervals."""
    bins = torch.cat([t_starts, t_ends[:, -1:]], -1).detach()
    t_new = sample_pdf(bins, weights, n_samples, uniforms=uniforms, generator=generator,
                       deterministic=deterministic)
    if include_original:
        edges = torch.sort(torch.cat([bins, t_new], -1), -1).values
    else:
        edges = torch.cat([bins[:, :1], t_new, bins[:, -1:]], -1)
        edges = torch.sort(edges, -1).values
    return edges[:, :-1].contiguous(), edges[:, 1:].contiguous()


# ----------------------------------------------------------------------------------- samplers
@dataclass
class RaySamples:
    """Sample intervals along ``R`` rays, padded or packed.

    Padded: ``t_starts, t_ends [R, S]``; ``hit [R]`` (optional) marks the rays whose samples
    count (the others get density 0). Packed: ``t_starts, t_ends [N]`` with ``ray_indices [N]``
    and per-ray ``offsets, counts [R]`` (ray ``r`` owns samples ``offsets[r] ..
    offsets[r] + counts[r] - 1``, in order along the ray). ``positions`` (``[R, S, 3]`` /
    ``[N, 3]``) are where the field is evaluated; None: the interval midpoints
    ``o + (t0 + t1) / 2 * d``.
    """

    t_starts: torch.Tensor
    t_ends: torch.Tensor
    hit: torch.Tensor | None = None
    ray_indices: torch.Tensor | None = None
    offsets: torch.Tensor | None = None
    counts: torch.Tensor | None = None
    positions: torch.Tensor | None = None

    @property
    def packed(self) -> bool:
        return self.offsets is not None

    @property
    def num_samples(self) -> int:
        return self.t_starts.numel()


#: ``weights_fn(samples) -> weights``: renders ``samples`` through the field (the renderer's
#: coarse pass) and returns their compositing weights; what two-pass samplers refine from.
WeightsFn = Callable[[RaySamples], torch.Tensor]


class Sampler(Protocol):
    """``sampler(origins [R,3], directions [R,3], near [R], far [R], hit [R] | None, *,
    jitter=False, generator=None, weights_fn=None) -> RaySamples``.

    ``near``/``far``/``hit`` are the renderer's ray bounds (a sampler with its own box
    intersects them with it). ``jitter``: False places samples deterministically, True draws
    random offsets from ``generator``, a tensor gives the uniforms themselves (shape per
    sampler). ``weights_fn`` is only used by two-pass samplers (:class:`ImportanceSampler`).
    """

    def __call__(self, origins: torch.Tensor, directions: torch.Tensor, near: torch.Tensor,
                 far: torch.Tensor, hit: torch.Tensor | None = None, *,
                 jitter: bool | torch.Tensor = False, generator: torch.Generator | None = None,
                 weights_fn: WeightsFn | None = None) -> RaySamples: ...


class StratifiedSampler:
    """``n_samples`` contiguous intervals over ``[near, far]`` (:func:`stratified_samples`);
    padded. A ``jitter`` tensor is the uniforms ``[R, n_samples + 1]``."""

    def __init__(self, n_samples: int = 64):
        if n_samples < 1:
            raise ValueError(f"StratifiedSampler: n_samples must be >= 1, got {n_samples}")
        self.n_samples = n_samples

    def __call__(self, origins, directions, near, far, hit=None, *, jitter=False,
                 generator=None, weights_fn=None) -> RaySamples:
        uniforms = jitter if torch.is_tensor(jitter) else None
        t_starts, t_ends = stratified_samples(
            near, far, self.n_samples, jitter=uniforms is not None or bool(jitter),
            generator=generator, uniforms=uniforms)
        return RaySamples(t_starts, t_ends, hit=hit)


class ImportanceSampler:
    """Hierarchical sampling: the padded samples of ``base`` are rendered once through
    ``weights_fn`` (the coarse pass), then ``n_importance`` more are drawn from their weights
    (:func:`importance_samples`, coarse edges kept: ``S + n_importance`` intervals). Without
    jitter the new samples are evenly spaced quantiles; with it they are random (``generator``).
    """

    def __init__(self, base: Sampler, n_importance: int):
        if n_importance < 1:
            raise ValueError(f"ImportanceSampler: n_importance must be >= 1, got "
                             f"{n_importance}")
        self.base, self.n_importance = base, n_importance

    def __call__(self, origins, directions, near, far, hit=None, *, jitter=False,
                 generator=None, weights_fn=None) -> RaySamples:
        if weights_fn is None:
            raise ValueError("ImportanceSampler needs weights_fn (the renderer's coarse pass)")
        coarse = self.base(origins, directions, near, far, hit, jitter=jitter,
                           generator=generator)
        if coarse.packed:
            raise ValueError("ImportanceSampler needs a padded base sampler")
        weights = weights_fn(coarse).detach()
        random = torch.is_tensor(jitter) or bool(jitter)
        t_starts, t_ends = importance_samples(coarse.t_starts, coarse.t_ends, weights,
                                              self.n_importance, generator=generator,
                                              deterministic=not random)
        return RaySamples(t_starts, t_ends, hit=hit)
