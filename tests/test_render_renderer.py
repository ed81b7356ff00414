"""VolumeRenderer against closed-form answers (constant-density slab and sphere)."""

import math

import pytest
import torch

from neural3d.render import RendererConfig, VolumeRenderer

BACKENDS = ["torch", "cpp"]


def constant_field(sigma, colour):
    colour = torch.as_tensor(colour, dtype=torch.float64)

    def field(x, d):
        dens = torch.full(x.shape[:-1], sigma, dtype=x.dtype)
        return dens, colour.to(x.dtype).expand(*x.shape[:-1], colour.numel())

    return field


@pytest.mark.parametrize("backend", BACKENDS)
def test_slab_matches_closed_form(backend):
    sigma, colour, bg = 1.7, (0.2, 0.5, 0.9), (1.0, 1.0, 1.0)
    # box from x=-0.5..0.5 (thickness L along x for rays along +x), rays from x=-2
    cfg = RendererConfig(n_samples=256, aabb=(-0.5, -1, -1, 0.5, 1, 1), white_background=True,
                         backend=backend)
    r = VolumeRenderer(cfg).eval()
    y = torch.linspace(-0.9, 0.9, 7, dtype=torch.float64)
    o = torch.stack([torch.full_like(y, -2.0), y, torch.zeros_like(y)], -1)
    d = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64).expand_as(o)
    out = r(constant_field(sigma, colour), o, d)
    L, n = 1.0, 1.5
    op = 1 - math.exp(-sigma * L)
    assert torch.allclose(out["opacity"], torch.full_like(y, op), atol=1e-10, rtol=0)
    expect = torch.tensor(colour, dtype=torch.float64) * op + torch.tensor(bg) * (1 - op)
    assert torch.allclose(out["rgb"], expect.expand(7, 3), atol=1e-10)
    # expected depth: integral of t sigma exp(-sigma (t - n)) over [n, n + L]
    depth = n * op + (op / sigma - L * math.exp(-sigma * L))
    assert torch.allclose(out["depth"], torch.full_like(y, depth), atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_sphere_matches_closed_form_and_misses_get_background(backend):
    sigma, radius = 3.0, 0.8
    cfg = RendererConfig(n_samples=32, sphere_radius=radius, background=(0.1, 0.2, 0.3),
                         backend=backend)
    r = VolumeRenderer(cfg).eval()
    b = torch.tensor([0.0, 0.3, 0.6, 0.79, 0.9, 2.0], dtype=torch.float64)  # impact params
    o = torch.stack([b, torch.zeros_like(b), torch.full_like(b, -3.0)], -1)
    d = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(o)
    out = r(constant_field(sigma, (1.0, 0.0, 0.0)), o, d)
    chord = 2 * torch.sqrt((radius**2 - b**2).clamp_min(0))
    op = 1 - torch.exp(-sigma * chord)
    assert torch.allclose(out["opacity"], op, atol=1e-10)
    assert out["opacity"][-2:].abs().max() == 0  # misses: zero opacity, background colour
    assert torch.allclose(out["rgb"][-1], torch.tensor([0.1, 0.2, 0.3], dtype=torch.float64))


def test_renderer_importance_and_gradients_float32():
    torch.manual_seed(0)
    cfg = RendererConfig(n_samples=16, n_importance=16, aabb=(-1, -1, -1, 1, 1, 1),
                         white_background=True)
    r = VolumeRenderer(cfg)
    lin = torch.nn.Linear(3, 4)

    def field(x, d):
        h = lin(x)
        return torch.nn.functional.softplus(h[..., 0]) * 5, torch.sigmoid(h[..., 1:])

    o = torch.tensor([[0.0, 0.0, -3.0]]).expand(64, 3) + torch.randn(64, 3) * 0.2
    d = torch.nn.functional.normalize(torch.tensor([[0.0, 0.0, 1.0]]) + torch.randn(64, 3) * 0.1,
                                      dim=-1)
    out = r(field, o, d, generator=torch.Generator().manual_seed(0), return_weights=True)
    assert out["rgb"].shape == (64, 3) and out["weights"].shape == (64, 32)
    assert torch.isfinite(out["rgb"]).all()
    out["rgb"].sum().backward()
    assert lin.weight.grad is not None and torch.isfinite(lin.weight.grad).all()


def test_renderer_feature_channels_and_config_validation():
    r = VolumeRenderer(RendererConfig(n_samples=8, near=0.5, far=2.0)).eval()
    o, d = torch.zeros(5, 3), torch.tensor([[0.0, 0.0, 1.0]]).expand(5, 3)

    def field(x, dd):
        return torch.ones(x.shape[:-1]), torch.ones(*x.shape[:-1], 16)

    out = r(field, o, d)
    assert out["features"].shape == (5, 16) and "rgb" not in out
    with pytest.raises(ValueError):
        RendererConfig(n_samples=0)
    with pytest.raises(ValueError):
        RendererConfig(backend="gpu")


def _triplane_field(seed=0):
    from neural3d.fields import TriplaneField

    torch.manual_seed(seed)
    return TriplaneField(resolution=8, channels=4, hidden=16, layers=1, init_std=0.5,
                         aabb=(-0.5, -0.5, -0.5, 0.5, 0.5, 0.5),
                         density_activation="trunc_exp")


def _rays(n=64, seed=1):
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g) * 0.1 + torch.tensor([0.0, 0.0, -2.0])
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g) * 0.3
                                      + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    return o, d


@pytest.mark.parametrize("backend", BACKENDS)
def test_packed_and_padded_renders_of_the_same_samples_agree(backend):
    from neural3d.render import OccupancyGridSampler, RaySamples
    from neural3d.render.reference import packed_to_padded

    field = _triplane_field()
    aabb = (-0.5, -0.5, -0.5, 0.5, 0.5, 0.5)
    c = (torch.arange(8) + 0.5) / 8 - 0.5
    hull = torch.stack(torch.meshgrid(c, c, c, indexing="ij"), -1).norm(dim=-1) < 0.4
    grid = OccupancyGridSampler(torch.tensor(aabb), 8, hull, step=0.03)
    o, d = _rays()
    packed = grid(o, d, jitter=torch.rand(64, generator=torch.Generator().manual_seed(2)))
    assert packed.packed and int((packed.counts == 0).sum()) > 0  # some rays see nothing
    # the same samples padded: zero-length padding intervals contribute nothing
    ts, _ = packed_to_padded(packed.t_starts, packed.offsets, packed.counts)
    te, _ = packed_to_padded(packed.t_ends, packed.offsets, packed.counts)
    padded = RaySamples(ts, te)
    r = VolumeRenderer(RendererConfig(aabb=aabb, background=(0.2, 0.4, 0.6), backend=backend))
    outs = [r(field, o, d, sampler=lambda *a, s=s, **k: s, return_weights=True)
            for s in (packed, padded)]
    for key in ("rgb", "depth", "opacity"):
        torch.testing.assert_close(outs[0][key], outs[1][key], rtol=1e-5, atol=1e-6)
    assert outs[0]["samples"] == packed.num_samples and outs[0]["backend"] == backend
    assert outs[0]["weights"].shape == (packed.num_samples,)
    assert torch.equal(outs[0]["ray_indices"], packed.ray_indices)
    # packed positions given by the sampler are where the field is evaluated
    assert packed.positions is not None
    again = r(field, o, d, sampler=lambda *a, **k: RaySamples(
        packed.t_starts, packed.t_ends, ray_indices=packed.ray_indices,
        offsets=packed.offsets, counts=packed.counts))
    torch.testing.assert_close(again["rgb"], outs[0]["rgb"], rtol=1e-5, atol=1e-6)


def test_renderer_takes_a_sampler_at_construction_or_per_call_and_reports_timings():
    from neural3d.render import StratifiedSampler, default_sampler

    field = _triplane_field()
    o, d = _rays(16)
    cfg = RendererConfig(n_samples=8, aabb=(-0.5, -0.5, -0.5, 0.5, 0.5, 0.5))
    assert isinstance(default_sampler(cfg), StratifiedSampler)
    a = VolumeRenderer(cfg, sampler=StratifiedSampler(24)).eval()
    b = VolumeRenderer(cfg).eval()
    timings = {}
    out_a = a(field, o, d, timings=timings)
    out_b = b(field, o, d, sampler=StratifiedSampler(24))
    assert out_a["samples"] == 16 * 24 and torch.equal(out_a["rgb"], out_b["rgb"])
    assert set(timings) == {"sample", "field", "composite"}
    assert all(v >= 0 for v in timings.values())
    assert b(field, o, d)["samples"] == 16 * 8


def test_render_image_chunks_restore_modes_and_clamp():
    from neural3d.cameras import Cameras, orbit_path
    from neural3d.render import render_image

    field = _triplane_field()
    cams = Cameras(orbit_path(2, radius=2.0), 20.0, 20.0, 6.0, 5.0, 12, 10)
    r = VolumeRenderer(RendererConfig(n_samples=16, aabb=(-0.5, -0.5, -0.5, 0.5, 0.5, 0.5),
                                      background=(1.5, 1.5, 1.5)))  # > 1: clamped
    r.train()
    img = render_image(r, field, cams, chunk=7)
    assert img.shape == (2, 10, 12, 3) and r.training and field.training
    o, d = cams.pixel_rays()
    with torch.no_grad():
        ref = r.eval()(field, o.reshape(-1, 3), d.reshape(-1, 3))["rgb"]
    torch.testing.assert_close(img, ref.reshape(2, 10, 12, 3).clamp(0, 1), rtol=0, atol=0)
    assert float(img.max()) == 1.0 and float(ref.max()) > 1.0
    assert render_image(r, field, cams, chunk=1000).equal(img)
    with pytest.raises(ValueError, match="chunk"):
        render_image(r, field, cams, chunk=0)
