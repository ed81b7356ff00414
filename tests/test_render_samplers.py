import math

import pytest
import torch

from neural3d.render import (
    ImportanceSampler,
    StratifiedSampler,
    importance_samples,
    near_far_aabb,
    near_far_sphere,
    sample_pdf,
    stratified_samples,
)
from neural3d.render.samplers import uniform


def test_near_far_aabb_hits_and_misses():
    o = torch.tensor([[-2.0, 0.0, 0.0], [-2.0, 5.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]])
    d = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    near, far, hit = near_far_aabb(o, d, (-1, -1, -1, 1, 1, 1))
    assert hit.tolist() == [True, False, True, False]
    assert near[0].item() == pytest.approx(1.0) and far[0].item() == pytest.approx(3.0)
    assert near[2].item() == pytest.approx(0.0) and far[2].item() == pytest.approx(1.0)
    assert near[1] == far[1] and near[3] == far[3]
    assert torch.isfinite(near).all() and torch.isfinite(far).all()


def test_near_far_sphere_matches_chord():
    o = torch.tensor([[0.0, 0.5, -3.0], [0.0, 2.0, -3.0]], dtype=torch.float64)
    d = torch.tensor([[0.0, 0.0, 2.0], [0.0, 0.0, 1.0]], dtype=torch.float64)  # unnormalised
    near, far, hit = near_far_sphere(o, d, radius=1.0)
    assert hit.tolist() == [True, False]
    half = math.sqrt(1 - 0.25)
    assert near[0].item() == pytest.approx((3 - half) / 2)
    assert far[0].item() == pytest.approx((3 + half) / 2)


def test_stratified_covers_range_and_jitter_is_seeded():
    near, far = torch.tensor([1.0, 2.0]), torch.tensor([3.0, 6.0])
    s, e = stratified_samples(near, far, 8)
    assert torch.allclose(s[:, 0], near) and torch.allclose(e[:, -1], far)
    assert torch.allclose(s[:, 1:], e[:, :-1]) and (e > s).all()
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = stratified_samples(near, far, 8, jitter=True, generator=g1)
    b = stratified_samples(near, far, 8, jitter=True, generator=g2)
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], s)
    assert torch.allclose(a[0][:, 0], near) and torch.allclose(a[1][:, -1], far)
    assert (a[1] >= a[0]).all() and torch.allclose(a[0][:, 1:], a[1][:, :-1])


def test_sample_pdf_inverse_cdf_deterministic_and_concentrated():
    bins = torch.linspace(0, 1, 11).expand(2, 11)
    w = torch.zeros(2, 10)
    w[:, 3] = 1.0
    u = torch.rand(2, 64, generator=torch.Generator().manual_seed(0))
    t1 = sample_pdf(bins, w, 64, uniforms=u)
    t2 = sample_pdf(bins, w, 64, uniforms=u.clone())
    assert torch.equal(t1, t2)
    inside = ((t1 >= 0.3) & (t1 <= 0.4)).float().mean()
    assert inside > 0.99
    # uniform weights: inverse CDF is the identity
    t = sample_pdf(bins, torch.ones(2, 10), 5, uniforms=torch.tensor([[0.05, 0.25, 0.5, 0.75,
                                                                        0.95]] * 2))
    assert torch.allclose(t, torch.tensor([[0.05, 0.25, 0.5, 0.75, 0.95]] * 2), atol=1e-6)


def test_importance_samples_merge_intervals():
    near, far = torch.zeros(3), torch.full((3,), 2.0)
    s, e = stratified_samples(near, far, 16)
    w = torch.rand(3, 16, generator=torch.Generator().manual_seed(1))
    s2, e2 = importance_samples(s, e, w, 32, generator=torch.Generator().manual_seed(2))
    assert s2.shape == (3, 48)
    assert torch.allclose(s2[:, 0], near) and torch.allclose(e2[:, -1], far)
    assert (e2 >= s2).all() and torch.equal(s2[:, 1:], e2[:, :-1])
    d2 = importance_samples(s, e, w, 32, deterministic=True)
    d3 = importance_samples(s, e, w, 32, deterministic=True)
    assert torch.equal(d2[0], d3[0])


def _rays(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    o = torch.randn(n, 3, generator=g) * 0.1 + torch.tensor([0.0, 0.0, -3.0])
    d = torch.nn.functional.normalize(torch.randn(n, 3, generator=g) * 0.2
                                      + torch.tensor([0.0, 0.0, 1.0]), dim=-1)
    near, far, hit = near_far_aabb(o, d, (-1, -1, -1, 1, 1, 1))
    return o, d, near, far, hit


def test_stratified_sampler_is_stratified_samples():
    o, d, near, far, hit = _rays()
    sampler = StratifiedSampler(8)
    plain = sampler(o, d, near, far, hit)
    assert not plain.packed and plain.num_samples == 6 * 8 and plain.hit is hit
    ref = stratified_samples(near, far, 8)
    assert torch.equal(plain.t_starts, ref[0]) and torch.equal(plain.t_ends, ref[1])
    jit = sampler(o, d, near, far, hit, jitter=True, generator=torch.Generator().manual_seed(4))
    ref = stratified_samples(near, far, 8, jitter=True, generator=torch.Generator().manual_seed(4))
    assert torch.equal(jit.t_starts, ref[0]) and torch.equal(jit.t_ends, ref[1])
    u = torch.rand(6, 9, generator=torch.Generator().manual_seed(5))
    given = sampler(o, d, near, far, hit, jitter=u)
    ref = stratified_samples(near, far, 8, jitter=True, uniforms=u)
    assert torch.equal(given.t_starts, ref[0]) and torch.equal(given.t_ends, ref[1])
    with pytest.raises(ValueError, match="n_samples"):
        StratifiedSampler(0)


def test_importance_sampler_is_importance_samples_of_the_coarse_weights():
    o, d, near, far, hit = _rays()
    w = torch.rand(6, 8, generator=torch.Generator().manual_seed(1))
    seen = []

    def weights_fn(samples):
        seen.append(samples)
        return w

    sampler = ImportanceSampler(StratifiedSampler(8), 16)
    for jitter in (False, True):
        out = sampler(o, d, near, far, hit, jitter=jitter,
                      generator=torch.Generator().manual_seed(2), weights_fn=weights_fn)
        g = torch.Generator().manual_seed(2)
        s, e = stratified_samples(near, far, 8, jitter=jitter, generator=g)
        assert torch.equal(seen[-1].t_starts, s)
        ref = importance_samples(s, e, w, 16, generator=g, deterministic=not jitter)
        assert torch.equal(out.t_starts, ref[0]) and torch.equal(out.t_ends, ref[1])
        assert out.t_starts.shape == (6, 24)
    with pytest.raises(ValueError, match="weights_fn"):
        sampler(o, d, near, far, hit)


def test_uniform_draws_on_the_generators_device():
    a = uniform((4, 3), torch.Generator().manual_seed(7), torch.float64, "cpu")
    b = torch.rand((4, 3), generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    assert torch.equal(a, b)
