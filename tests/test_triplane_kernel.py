"""Fused triplane sampling (C++ CPU; CUDA when a GPU is present) against the grid_sample
reference: values, gradients to planes and points, borders, the box, batches, strides."""

import pytest
import torch
import torch.nn.functional as F

from neural3d.fields import (
    TriplaneField,
    normalize_aabb,
    triplane_linear,
    triplane_reference,
    triplane_sample,
)

HAS_CUDA = torch.cuda.is_available()
FUSED = [
    "cpp",
    pytest.param("cuda", marks=[pytest.mark.cuda,
                                pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")]),
]
AGGREGATES = ["sum", "mean", "concat"]



def special_points(H: int, W: int) -> torch.Tensor:
    """Normalised points on the edges of the sampling domain, one per row ``[M, 3]``: the box
    faces (+-1), the outermost texel centres (where border clipping starts, gradient 0 there as
    grid_sample), texel edges, and points outside the box (clipped)."""
    vals = [-1.0, 1.0, 1.0 / W - 1.0, 1.0 - 1.0 / W, 1.0 / H - 1.0, 1.0 - 1.0 / H, 0.0,
            2.0 / W - 1.0, -1.5, 1.7, -3.0]
    v = torch.tensor(vals, dtype=torch.float64)
    g = torch.Generator().manual_seed(1)
    rows = [torch.stack([a, b, c]) for a in v for b in v[:4] for c in v[::3]]
    rows += [torch.rand(3, generator=g, dtype=torch.float64) * 2 - 1 for _ in range(8)]
    return torch.stack(rows)


def make_inputs(B=2, C=5, H=7, W=9, N=64, dtype=torch.float64, device="cpu", seed=0,
                special=True):
    g = torch.Generator().manual_seed(seed)
    planes = torch.randn(B, 3, C, H, W, generator=g, dtype=torch.float64)
    pts = torch.rand(B, N, 3, generator=g, dtype=torch.float64) * 2.4 - 1.2
    if special:
        sp = special_points(H, W)
        pts = torch.cat([pts, sp[None].expand(B, -1, -1)], dim=1)
    return planes.to(dtype=dtype, device=device), pts.to(dtype=dtype, device=device)


def run(planes, pts, aggregate, backend, want=(True, True)):
    """Output and the gradients (planes, points) of a fixed random loss."""
    planes = planes.detach().clone().requires_grad_(want[0])
    pts = pts.detach().clone().requires_grad_(want[1])
    out = (triplane_reference(planes, pts, aggregate) if backend == "reference" else
           triplane_sample(planes, pts, None, aggregate, backend=backend))
    if backend != "reference":  # the kernel ran, not the fallback
        assert type(out.grad_fn).__name__ == "_FusedTriplaneBackward"
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(3),
                      dtype=torch.float64).to(out)
    (out * cot).sum().backward()
    return out.detach(), planes.grad, pts.grad


@pytest.mark.parametrize("fused", FUSED, indirect=True)
@pytest.mark.parametrize("aggregate", AGGREGATES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_forward_and_gradients_match_grid_sample(fused, aggregate, dtype):
    name, device = fused
    planes, pts = make_inputs(dtype=dtype, device=device)
    ref = run(planes, pts, aggregate, "reference")
    got = run(planes, pts, aggregate, name)
    tol = dict(atol=2e-5, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-12, rtol=1e-12)
    assert got[0].shape == ref[0].shape == (2, pts.shape[1], (15 if aggregate == "concat" else 5))
    for a, b in zip(got, ref, strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("fused", FUSED, indirect=True)
@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_gradcheck(fused, aggregate):
    """float64 finite differences, for the planes and the points (points off texel edges and
    clipping borders, where the function has kinks; the border points are covered above)."""
    name, device = fused
    planes, pts = make_inputs(B=2, C=3, H=4, W=5, N=12, device=device, special=False)
    pts[0, :3] = torch.tensor([[1.4, -0.1, 0.3], [-1.3, 1.2, -0.77], [0.2, 0.1, -2.0]])
    planes.requires_grad_(True)
    pts.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda p, x: triplane_sample(p, x, None, aggregate, backend=name), (planes, pts),
        eps=1e-6, atol=1e-7)


@pytest.mark.parametrize("fused", FUSED, indirect=True)
def test_one_gradient_at_a_time_and_large_channels(fused):
    """Only planes, only points; a channel count without specialised code; B = 1, many points
    (several threads' tiles when threads are available)."""
    name, device = fused
    planes, pts = make_inputs(B=1, C=37, H=16, W=11, N=5000, dtype=torch.float32, device=device)
    for want in ((True, False), (False, True)):
        ref = run(planes, pts, "sum", "reference", want)
        got = run(planes, pts, "sum", name, want)
        for a, b in zip(got, ref, strict=True):
            assert (a is None) == (b is None)
            if a is not None:
                torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5)


def test_cpu_thread_tiles_across_batch_elements(cpp_ext):
    """Several threads: each point range accumulates its own gradient tile, ranges straddle batch
    elements, the tiles are summed; the result does not depend on the thread count."""
    planes, pts = make_inputs(B=5, C=12, H=6, W=10, N=1000, dtype=torch.float64, special=False)
    ref = run(planes, pts, "mean", "reference")
    threads = torch.get_num_threads()
    try:
        for n in (1, 3, 4):
            torch.set_num_threads(n)
            got = run(planes, pts, "mean", "cpp")
            for a, b in zip(got, ref, strict=True):
                torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("fused", FUSED, indirect=True)
def test_world_points_in_a_box_and_non_contiguous_inputs(fused):
    name, device = fused
    aabb = torch.tensor([-0.5, -1.0, 0.0, 1.5, 1.0, 3.0], dtype=torch.float64, device=device)
    planes, pts = make_inputs(B=3, C=6, H=8, W=8, device=device)
    world = (pts + 1) / 2 * (aabb[3:] - aabb[:3]) + aabb[:3]
    world[:, :6] = torch.stack([aabb[:3], aabb[3:], aabb[:3] * 1.0001 - 1e-3,
                                aabb[3:] + 1e-3, aabb[[0, 4, 2]], aabb[[3, 1, 5]]])
    # non-contiguous: planes as a channel-sliced view of a bigger tensor, points transposed
    big = torch.randn(3, 3, 9, 8, 8, dtype=torch.float64, device=device)
    big[:, :, 1:7] = planes
    planes_nc = big[:, :, 1:7]
    world_nc = world.transpose(1, 2).contiguous().transpose(1, 2)
    assert not planes_nc.is_contiguous() and not world_nc.is_contiguous()
    for aggregate in AGGREGATES:
        ref = triplane_reference(planes, normalize_aabb(world, aabb), aggregate)
        got = triplane_sample(planes_nc, world_nc, aabb, aggregate, backend=name)
        torch.testing.assert_close(got, ref, atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("fused", FUSED, indirect=True)
def test_triplane_field_unchanged(fused, monkeypatch):
    """TriplaneField gives today's densities and gradients with the kernel."""
    name, device = fused
    torch.manual_seed(0)
    field = TriplaneField(resolution=16, channels=4, hidden=16, init_std=0.5).to(device)
    pos = (torch.rand(5, 9, 3, device=device) * 2.2 - 1.1)
    results = []
    for backend in ("torch", name):
        monkeypatch.setenv("NEURAL3D_BACKEND", backend)
        field.zero_grad()
        density, rgb = field(pos)
        (density.sum() + rgb.square().sum()).backward()
        results.append((density.detach(), rgb.detach(), field.planes.grad.clone()))
    for a, b in zip(*results, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_no_double_backward_and_fallbacks(cpp_ext):
    planes, pts = make_inputs(B=1, C=2, H=4, W=4, N=8, special=False)
    planes.requires_grad_(True)
    out = triplane_sample(planes, pts, None, "sum", backend="cpp")
    (g,) = torch.autograd.grad(out.square().sum(), planes, create_graph=True)
    with pytest.raises(RuntimeError):
        g.sum().backward()
    # what the kernels do not cover runs the reference
    for kwargs in (dict(aggregate="prod"), dict(mode="nearest")):
        torch.testing.assert_close(triplane_sample(planes, pts, None, backend="cpp", **kwargs),
                                   triplane_reference(planes, pts, **kwargs))
    with pytest.raises(ValueError, match="planes"):
        triplane_sample(planes[:, :2], pts)
    with pytest.raises(ValueError, match="points"):
        triplane_sample(planes, pts[..., :2])


def run_linear(planes, pts, weight, bias, aggregate, backend, want=(True, True, True, True)):
    """Output and the gradients (planes, points, weight, bias) of a fixed random loss of the
    first layer: fused (``cpp``) or grid_sample + F.linear (``reference``)."""
    leaves = [t.detach().clone().requires_grad_(w)
              for t, w in zip((planes, pts, weight, bias), want, strict=True)]
    if backend == "reference":
        out = F.linear(triplane_reference(*leaves[:2], aggregate), *leaves[2:])
    else:
        out = triplane_linear(*leaves[:3], leaves[3], None, aggregate, backend=backend)
        assert type(out.grad_fn).__name__ == "_FusedTriplaneLinearBackward"
    cot = torch.randn(out.shape, generator=torch.Generator().manual_seed(3),
                      dtype=torch.float64).to(out)
    (out * cot).sum().backward()
    return (out.detach(), *(t.grad for t in leaves))


def linear_layer(F_in, hidden=11, dtype=torch.float64, seed=5):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(hidden, F_in, generator=g, dtype=torch.float64).to(dtype),
            torch.randn(hidden, generator=g, dtype=torch.float64).to(dtype))


@pytest.mark.parametrize("aggregate", AGGREGATES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_fused_first_layer_matches_sampling_then_linear(cpp_ext, aggregate, dtype):
    """The fused first layer against grid_sample + F.linear: values and all four gradients,
    border and outside points included, chunks of points straddling batch elements."""
    planes, pts = make_inputs(B=3, C=5, N=150, dtype=dtype)
    weight, bias = linear_layer(15 if aggregate == "concat" else 5, dtype=dtype)
    ref = run_linear(planes, pts, weight, bias, aggregate, "reference")
    got = run_linear(planes, pts, weight, bias, aggregate, "cpp")
    tol = dict(atol=1e-4, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-11, rtol=1e-11)
    assert got[0].shape == (3, pts.shape[1], 11)
    for a, b in zip(got, ref, strict=True):
        assert a.dtype == dtype
        torch.testing.assert_close(a, b, **tol)


@pytest.mark.parametrize("aggregate", AGGREGATES)
def test_fused_first_layer_gradcheck(cpp_ext, aggregate):
    planes, pts = make_inputs(B=2, C=3, H=4, W=5, N=12, special=False)
    pts[0, :3] = torch.tensor([[1.4, -0.1, 0.3], [-1.3, 1.2, -0.77], [0.2, 0.1, -2.0]])
    weight, bias = linear_layer(9 if aggregate == "concat" else 3, hidden=4)
    inputs = tuple(t.requires_grad_(True) for t in (planes, pts, weight, bias))
    assert torch.autograd.gradcheck(
        lambda p, x, w, b: triplane_linear(p, x, w, b, None, aggregate, backend="cpp"), inputs,
        eps=1e-6, atol=1e-7)


def test_fused_first_layer_partial_gradients_and_threads(cpp_ext):
    """One gradient at a time, many points over several threads (per-thread weight gradients
    summed), a channel count without specialised code; no bias; bad shapes name the layer."""
    planes, pts = make_inputs(B=2, C=37, H=9, W=11, N=3000, special=False)
    weight, bias = linear_layer(37, hidden=19)
    ref = run_linear(planes, pts, weight, bias, "sum", "reference")
    threads = torch.get_num_threads()
    try:
        for n, want in ((3, (True, False, False, False)), (1, (False, True, False, False)),
                        (4, (False, False, True, False)), (2, (False, False, False, True))):
            torch.set_num_threads(n)
            got = run_linear(planes, pts, weight, bias, "sum", "cpp", want)
            torch.testing.assert_close(got[0], ref[0], atol=1e-11, rtol=1e-11)
            for k, w in enumerate(want, start=1):
                assert (got[k] is not None) == w
                if w:
                    torch.testing.assert_close(got[k], ref[k], atol=1e-10, rtol=1e-11)
    finally:
        torch.set_num_threads(threads)
    torch.testing.assert_close(triplane_linear(planes, pts, weight, None, backend="cpp"),
                               F.linear(triplane_reference(planes, pts), weight))
    with pytest.raises(ValueError, match=r"weight must be \[hidden, 37\]"):
        triplane_linear(planes, pts, weight[:, :5], bias)
    with pytest.raises(ValueError, match="bias"):
        triplane_linear(planes, pts, weight, bias[:3])
