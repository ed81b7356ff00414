"""OccupancyGridSampler: packed samples equal to the former ``march`` (fit's ray marcher), the
update rule and schedule, and the visual-hull helpers."""

import math

import pytest
import torch

from neural3d.render import (
    OccupancyGridSampler,
    density_threshold,
    grid_bounds,
    near_far_aabb,
    visual_hull,
)


def old_march(origins, dirs, grid, step, jitter=None, max_samples=None):
    """A copy of ``neural3d.methods.occupancy.march`` as it was before the renderer took
    samplers (the reference the sampler must reproduce exactly)."""
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


def sphere_hull(res, radius=0.35):
    c = (torch.arange(res) + 0.5) / res - 0.5
    x, y, z = torch.meshgrid(c, c, c, indexing="ij")
    return (x * x + y * y + z * z).sqrt() < radius


def rays(n=200, seed=1):
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g) * 0.1 + torch.tensor([0.0, 0.0, -2.0])
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g) * 0.3
                                      + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    o[:15] += 5.0  # rays that miss the box
    return o, d


@pytest.mark.parametrize("max_samples", [None, 20])
def test_packed_samples_equal_the_old_march(max_samples):
    aabb = torch.tensor([-0.5, -0.5, -0.5, 0.5, 0.5, 0.5])
    grid = OccupancyGridSampler(aabb, 16, sphere_hull(16), step=0.02, max_samples=max_samples)
    o, d = rays()
    jitter = torch.rand(o.shape[0], generator=torch.Generator().manual_seed(3))
    for jit, ref_jit in ((False, None), (jitter, jitter)):
        got = grid(o, d, jitter=jit)
        pos, ts, te, offsets, counts, idx = old_march(o, d, grid, 0.02, ref_jit, max_samples)
        assert got.packed and got.num_samples == pos.shape[0] > 0
        for a, b in ((got.positions, pos), (got.t_starts, ts), (got.t_ends, te),
                     (got.offsets, offsets), (got.counts, counts), (got.ray_indices, idx)):
            assert torch.equal(a, b)
        assert int(got.counts[:15].sum()) == 0
    # the renderer's bounds are intersected with the box (equal bounds: the same samples)
    near, far, hit = near_far_aabb(o, d, aabb)
    same = grid(o, d, near, far, hit, jitter=jitter)
    assert torch.equal(same.t_starts, grid(o, d, jitter=jitter).t_starts)
    clipped = grid(o, d, near, near + 0.3, hit)
    assert bool((clipped.t_starts < (near + 0.3)[clipped.ray_indices]).all())
    # jitter=True draws one uniform per ray from the generator
    drawn = grid(o, d, jitter=True, generator=torch.Generator().manual_seed(9))
    u = torch.rand(o.shape[0], generator=torch.Generator().manual_seed(9))
    assert torch.equal(drawn.t_starts, grid(o, d, jitter=u).t_starts)


def test_update_carves_empty_cells_within_the_hull_and_follows_fit_schedule():
    aabb = torch.tensor([-1.0, -1, -1, 1, 1, 1])
    hull = torch.ones(16, 16, 16, dtype=torch.bool)
    hull[0] = False
    grid = OccupancyGridSampler(aabb, 16, hull, step=0.05)

    def density(p):
        return torch.where(p.norm(dim=-1) < 0.4, 100.0, 0.0)

    g = torch.Generator().manual_seed(0)
    assert grid.update_every_n_steps(8, density, g, every=4, warmup=16) is None
    assert grid.update_every_n_steps(18, density, g, every=4, warmup=16) is None
    assert torch.equal(grid.occ, hull)
    # the EMA starts high (1e3): it takes a few refreshes to decay below the threshold
    for step in range(16, 16 + 4 * 40, 4):
        frac = grid.update_every_n_steps(step, density, g, every=4, warmup=16, alpha=0.01)
    assert frac == pytest.approx(float(grid.occ.float().mean()))
    assert not bool((grid.occ & ~hull).any())
    centres = aabb[:3] + (torch.stack(torch.meshgrid(*[torch.arange(16)] * 3, indexing="ij"),
                                      -1) + 0.5) * grid.cell_size()
    r = centres.norm(dim=-1)
    assert bool(grid.occ[r < 0.3].all()) and not bool(grid.occ[r > 0.8].any())
    assert density_threshold(0.01, 0.05) == pytest.approx(-math.log(0.99) / 0.05)
    with pytest.raises(ValueError, match="step"):
        OccupancyGridSampler(aabb, 8, step=0.0)


def test_visual_hull_and_grid_bounds():
    from neural3d.cameras import Cameras, orbit_path

    # a black cube [-0.2, 0.2]^3 on white, seen from 8 views: the hull holds it, not the corners,
    # and its bounds are tight around it (one dilated cell)
    cams = Cameras(orbit_path(8, radius=2.0, elevation_deg=20.0), 40.0, 40.0, 16.0, 16.0, 32, 32)
    o, d = cams.pixel_rays()
    _, _, hit = near_far_aabb(o.reshape(-1, 3), d.reshape(-1, 3), (-0.2,) * 3 + (0.2,) * 3)
    images = torch.where(hit.reshape(8, 32, 32, 1), 0.0, 1.0).expand(8, 32, 32, 3)
    box = torch.tensor([-0.6, -0.6, -0.6, 0.6, 0.6, 0.6])  # every cell in view
    hull = visual_hull(images, cams, torch.ones(3), box, res=20)
    assert bool(hull[10, 10, 10]) and not bool(hull[0, 0, 0]) and not bool(hull[19, 19, 0])
    tight = grid_bounds(hull, box, margin_cells=0)
    assert bool((tight[:3] <= -0.2).all()) and bool((tight[3:] >= 0.2).all())
    assert bool((tight[:3] > -0.5).all()) and bool((tight[3:] < 0.5).all())
    assert torch.equal(grid_bounds(torch.zeros(4, 4, 4, dtype=torch.bool), box), box)
