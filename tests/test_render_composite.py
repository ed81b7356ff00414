"""Fused compositing kernels (C++ CPU; CUDA when a GPU is present) against the torch reference."""

import os
import subprocess
import sys

import pytest
import torch

from neural3d.render import composite, composite_alphas, composite_packed
from neural3d.render.reference import composite_padded_reference

HAS_CUDA = torch.cuda.is_available()
FUSED = [
    "cpp",
    pytest.param("cuda", marks=[pytest.mark.cuda,
                                pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")]),
]



def make_rays(r, s, c, dtype, device, seed=0, scale=3.0, length=4.0):
    g = torch.Generator().manual_seed(seed)
    sig = torch.rand(r, s, generator=g, dtype=torch.float64) * scale
    sig[:, ::5] = 0.0  # empty space between samples
    t = torch.sort(torch.rand(r, s + 1, generator=g, dtype=torch.float64) * length, -1).values
    feat = torch.rand(r, s, c, generator=g, dtype=torch.float64)
    to = dict(dtype=dtype, device=device)
    return (sig.to(**to), t[:, :-1].contiguous().to(**to), t[:, 1:].contiguous().to(**to),
            feat.to(**to))


def loss_of(res, g):
    """A loss touching every output, with fixed random cotangents."""
    l = (res.features * g["out"]).sum() + (res.depth * g["depth"]).sum()
    l = l + (res.opacity * g["op"]).sum()
    if res.weights is not None:
        l = l + (res.weights * g["w"]).sum()
    return l


def cotangents(r, s, c, dtype, device, seed=1):
    gen = torch.Generator().manual_seed(seed)
    def rnd(*shape):
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype=dtype,
                                                                          device=device)
    return {"out": rnd(r, c), "depth": rnd(r), "op": rnd(r), "w": rnd(r, s)}


@pytest.mark.parametrize("fused", FUSED, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("c", [1, 3, 4, 7])
@pytest.mark.parametrize("stop_eps", [0.0, 1e-2])
@pytest.mark.parametrize("r, s", [(45, 37), (32, 48)])  # ragged / whole 64-byte-aligned tiles
def test_forward_backward_match_reference(fused, dtype, c, stop_eps, r, s):
    name, dev = fused
    sig, t0, t1, feat = make_rays(r, s, c, dtype, dev)
    bg = torch.rand(c, dtype=dtype, device=dev)
    g = cotangents(r, s, c, dtype, dev)
    results = {}
    for b in ("torch", name):
        x = sig.clone().requires_grad_()
        f = feat.clone().requires_grad_()
        res = composite(x, f, t0, t1, background=bg, return_weights=True, stop_eps=stop_eps,
                        backend=b)
        assert res.backend == b
        loss_of(res, g).backward()
        results[b] = (res, x.grad, f.grad)
    tol = dict(atol=2e-5, rtol=1e-4) if dtype == torch.float32 else dict(atol=1e-11, rtol=1e-9)
    ref, got = results["torch"], results[name]
    for key in ("features", "depth", "opacity", "weights"):
        torch.testing.assert_close(getattr(got[0], key), getattr(ref[0], key), **tol)
    torch.testing.assert_close(got[1], ref[1], **tol)
    torch.testing.assert_close(got[2], ref[2], **tol)


@pytest.mark.parametrize("fused", FUSED, indirect=True)
@pytest.mark.parametrize("stop_eps", [0.0, 1e-2])
def test_gradcheck_float64(fused, stop_eps):
    name, dev = fused
    sig, t0, t1, feat = make_rays(5, 9, 2, torch.float64, dev, seed=3, scale=1.5)
    bg = torch.rand(2, dtype=torch.float64, device=dev)
    sig.requires_grad_()
    feat.requires_grad_()
    bg.requires_grad_()

    def fn(x, f, b):
        res = composite(x, f, t0, t1, background=b, return_weights=True, stop_eps=stop_eps,
                        backend=name)
        assert res.backend == name
        return res.features, res.depth, res.opacity, res.weights

    assert torch.autograd.gradcheck(fn, (sig, feat, bg), eps=1e-6, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("fused", FUSED, indirect=True)
def test_per_ray_background_with_leading_dims(fused):
    """Rays shaped [2, 3, S] with a per-ray background [2, 3, C] and one broadcast over the
    first dim [3, C]: outputs and gradients (background included) equal the reference."""
    name, dev = fused
    sig, t0, t1, feat = make_rays(6, 11, 2, torch.float64, dev, seed=5)
    shape = (2, 3)
    sig, t0, t1 = (x.reshape(*shape, 11) for x in (sig, t0, t1))
    feat = feat.reshape(*shape, 11, 2)
    for bg_shape in ((2, 3, 2), (3, 2)):
        bg = torch.rand(*bg_shape, dtype=torch.float64, device=dev)
        grads = {}
        for b in ("torch", name):
            x, f, bgr = (t.clone().requires_grad_() for t in (sig, feat, bg))
            res = composite(x, f, t0, t1, background=bgr, backend=b)
            assert res.backend == b and res.features.shape == (*shape, 2)
            weight = torch.arange(1.0, 3.0, device=dev, dtype=torch.float64)
            (res.features * weight).sum().backward()
            grads[b] = (res.features.detach(), x.grad, f.grad, bgr.grad)
        for got, ref in zip(grads[name], grads["torch"], strict=True):
            torch.testing.assert_close(got, ref, atol=1e-11, rtol=1e-9)


@pytest.mark.parametrize("fused", FUSED, indirect=True)
def test_gradcheck_alphas_and_packed(fused):
    name, dev = fused
    sig, t0, t1, feat = make_rays(4, 6, 3, torch.float64, dev, seed=4)
    alphas = (torch.rand(4, 6, dtype=torch.float64, device=dev) * 0.9).requires_grad_()
    feat.requires_grad_()

    def fn(a, f):
        res = composite_alphas(a, f, t0, t1, return_weights=True, backend=name)
        return res.features, res.depth, res.weights

    assert torch.autograd.gradcheck(fn, (alphas, feat), eps=1e-6, atol=1e-7)
    counts = torch.tensor([3, 0, 5, 2], device=dev)
    offsets = torch.cumsum(counts, 0) - counts
    n = int(counts.sum())
    ps = (torch.rand(n, dtype=torch.float64, device=dev) * 2).requires_grad_()
    pf = torch.rand(n, 3, dtype=torch.float64, device=dev).requires_grad_()
    pt = torch.sort(torch.rand(n + 1, dtype=torch.float64, device=dev), 0).values

    def fp(x, f):
        res = composite_packed(x, f, pt[:-1], pt[1:], offsets, counts, return_weights=True,
                               backend=name)
        return res.features, res.depth, res.opacity, res.weights

    assert torch.autograd.gradcheck(fp, (ps, pf), eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("fused", FUSED, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_packed_equals_padded(fused, dtype):
    name, dev = fused
    r, s, c = 40, 33, 4
    sig, t0, t1, feat = make_rays(r, s, c, dtype, dev, seed=5)
    counts = torch.randint(0, s + 1, (r,), generator=torch.Generator().manual_seed(6)).to(dev)
    counts[:3] = torch.tensor([0, s, 1], device=dev)
    mask = torch.arange(s, device=dev)[None, :] < counts[:, None]
    sig = sig * mask  # padded rays: zero density past each ray's count
    offsets = torch.cumsum(counts, 0) - counts
    g = cotangents(r, s, c, dtype, dev)
    out = {}
    for layout in ("padded", "packed"):
        x = sig.clone().requires_grad_()
        f = feat.clone().requires_grad_()
        if layout == "padded":
            res = composite(x, f, t0, t1, background=0.5, return_weights=True, backend=name)
            gw = g["w"]
        else:
            res = composite_packed(x[mask], f[mask], t0[mask], t1[mask], offsets, counts,
                                   background=0.5, return_weights=True, backend=name)
            gw = g["w"][mask]
        # padding samples of the padded layout have zero-length? no: they have zero density
        l = (res.features * g["out"]).sum() + (res.depth * g["depth"]).sum()
        l = l + (res.opacity * g["op"]).sum() + (res.weights * gw).sum()
        l.backward()
        out[layout] = (res, x.grad, f.grad)
    tol = dict(atol=1e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-10)
    pad, pk = out["padded"], out["packed"]
    torch.testing.assert_close(pk[0].features, pad[0].features, **tol)
    torch.testing.assert_close(pk[0].depth, pad[0].depth, **tol)
    torch.testing.assert_close(pk[0].opacity, pad[0].opacity, **tol)
    torch.testing.assert_close(pk[0].weights, pad[0].weights[mask], **tol)
    torch.testing.assert_close(pk[1][mask], pad[1][mask], **tol)
    torch.testing.assert_close(pk[2][mask], pad[2][mask], **tol)
    # and against the packed torch reference
    ref = composite_packed(sig[mask], feat[mask], t0[mask], t1[mask], offsets, counts,
                           background=0.5, return_weights=True, backend="torch")
    torch.testing.assert_close(pk[0].features.detach(), ref.features, **tol)
    torch.testing.assert_close(pk[0].weights.detach(), ref.weights, **tol)


@pytest.mark.parametrize("fused", FUSED, indirect=True)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_edge_cases_are_finite(fused, dtype):
    name, dev = fused
    r, s, c = 6, 300, 3
    sig, t0, t1, feat = make_rays(r, s, c, dtype, dev, seed=7)
    sig[0] = 0.0  # empty ray
    sig[1] = 1e30  # very large density
    sig[2, :] = 0.0
    sig[2, 150] = 1e6  # an opaque wall in the middle
    sig[3] = 1e4  # long dense ray: transmittance underflows far below float range
    t0[4] = t1[4]  # zero-length intervals
    x = sig.clone().requires_grad_()
    f = feat.clone().requires_grad_()
    res = composite(x, f, t0, t1, background=1.0, return_weights=True, backend=name)
    (res.features.sum() + res.depth.sum() + res.weights.sum()).backward()
    for t in (res.features, res.depth, res.opacity, res.weights, x.grad, f.grad):
        assert torch.isfinite(t).all()
    res = type(res)(*(v.detach() if torch.is_tensor(v) else v for v in vars(res).values()))
    assert res.opacity[0] == 0 and torch.allclose(res.features[0], torch.ones(c, dtype=dtype,
                                                                               device=dev))
    assert res.opacity[4] == 0
    assert torch.allclose(res.opacity[1], torch.ones((), dtype=dtype, device=dev))
    assert res.weights[1, 0].item() == pytest.approx(1.0)
    assert res.weights[1, 1:].abs().max() == 0
    assert res.weights[2, 150].item() == pytest.approx(1.0)
    torch.testing.assert_close(res.features[2], feat[2, 150])
    # empty inputs
    e = composite(torch.zeros(0, 8, dtype=dtype, device=dev), torch.zeros(0, 8, 3, dtype=dtype,
                  device=dev), torch.zeros(0, 8, dtype=dtype, device=dev),
                  torch.zeros(0, 8, dtype=dtype, device=dev), backend=name)
    assert e.features.shape == (0, 3)
    z = torch.zeros(0, dtype=dtype, device=dev)
    p = composite_packed(z, torch.zeros(0, 3, dtype=dtype, device=dev), z, z,
                         torch.zeros(2, dtype=torch.long, device=dev),
                         torch.zeros(2, dtype=torch.long, device=dev), background=0.25,
                         backend=name)
    assert torch.equal(p.opacity, torch.zeros(2, dtype=dtype, device=dev))
    assert torch.allclose(p.features, torch.full((2, 3), 0.25, dtype=dtype, device=dev))


@pytest.mark.parametrize("fused", FUSED, indirect=True)
@pytest.mark.parametrize("scale", [50.0, 1e5])
def test_fp32_gradient_accuracy_long_dense_rays(fused, scale):
    """fp32 fused gradients against the float64 reference on long rays of high density: the
    suffix form must not cancel (error stays at the level of fp32 autograd, ~1e-6 of max)."""
    name, dev = fused
    r, s, c = 64, 2048, 3
    sig64, t064, t164, f64 = make_rays(r, s, c, torch.float64, dev, seed=8, scale=scale,
                                       length=20.0)
    g = cotangents(r, s, c, torch.float64, dev)
    grads = {}
    for dtype, b in ((torch.float64, "torch"), (torch.float32, name)):
        x = sig64.to(dtype).detach().clone().requires_grad_()
        f = f64.to(dtype).detach().clone().requires_grad_()
        res = composite(x, f, t064.to(dtype), t164.to(dtype), background=1.0, backend=b)
        gg = {k: v.to(dtype) for k, v in g.items()}
        loss_of(res, gg).backward()
        grads[b] = (x.grad.double(), f.grad.double(), res.features.double())
    err_s = (grads[name][0] - grads["torch"][0]).abs().max() / grads["torch"][0].abs().max()
    err_f = (grads[name][1] - grads["torch"][1]).abs().max() / grads["torch"][1].abs().max()
    err_o = (grads[name][2] - grads["torch"][2]).abs().max()
    print(f"\nfp32 {name} vs fp64 reference, {r}x{s}: max|d grad_sigma|/max|grad_sigma| = "
          f"{err_s:.2e}, features grad {err_f:.2e}, output abs {err_o:.2e}")
    assert err_s < 2e-5 and err_f < 1e-5 and err_o < 1e-5


def test_cpu_isa_variants_agree(cpp_ext):
    """Every compiled vector variant (AVX-512, AVX2, baseline, scalar) gives the same answers."""
    code = (
        "import torch; from neural3d.render import backend, composite\n"
        "from neural3d.render.reference import composite_padded_reference as ref\n"
        "m = backend.get_module('cpp'); print(m.simd_isa())\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x = (torch.rand(21, 40, generator=g) * 3).requires_grad_()\n"
        "t = torch.sort(torch.rand(21, 41, generator=g) * 4, -1).values\n"
        "f = torch.rand(21, 40, 3, generator=g).requires_grad_()\n"
        "for b in ('cpp', 'torch'):\n"
        "    r = composite(x, f, t[:, :-1], t[:, 1:], return_weights=True, backend=b)\n"
        "    (r.features.sum() + r.depth.sum() + r.weights.square().sum()).backward()\n"
        "    if b == 'cpp': a = (r.features, r.weights, x.grad.clone(), f.grad.clone())\n"
        "    else: e = (r.features, r.weights, x.grad, f.grad)\n"
        "    x.grad = None; f.grad = None\n"
        "for u, v in zip(a, e): torch.testing.assert_close(u, v, atol=2e-5, rtol=1e-4)\n"
    )
    for isa in ("avx2", "baseline", "scalar"):
        env = dict(os.environ, NEURAL3D_CPU_ISA=isa, NEURAL3D_BACKEND="")
        # no timeout: a subprocess rebuilds the kernel if the cached build is stale
        p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
        assert p.returncode == 0, p.stderr[-2000:]


def test_reference_is_plain_torch():
    sig, t0, t1, feat = make_rays(3, 4, 2, torch.float64, "cpu")
    out, depth, op, w = composite_padded_reference(sig, t0, t1, feat)
    assert torch.allclose(op, 1 - torch.exp(-(sig * (t1 - t0)).sum(-1)))
