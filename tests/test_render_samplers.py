import math

import pytest
import torch

from neural3d.render import (
    importance_samples,
    near_far_aabb,
    near_far_sphere,
    sample_pdf,
    stratified_samples,
)


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
