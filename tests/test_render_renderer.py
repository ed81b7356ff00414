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
