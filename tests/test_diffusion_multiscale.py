"""Matryoshka Diffusion (NestedUNet, multi-resolution loss, joint sampling) and f-DM stages."""

import math

import pytest
import torch

from neural3d.diffusion import CosineSchedule, ShiftedSchedule
from neural3d.diffusion.fdm import FDM
from neural3d.diffusion.mdm import (
    MatryoshkaDiffusion,
    NestedUNet,
    PackedSchedule,
    active_levels,
    pack,
    unpack,
)
from neural3d.diffusion.unet import UNet

pytestmark = pytest.mark.usefixtures("one_thread")


INNER = dict(channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(2,))


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_mdm(**kw):
    net = NestedUNet(3, (16, 8, 4), shell_channels=(8, 8), inner=INNER, num_classes=2)
    return MatryoshkaDiffusion(net, CosineSchedule(), **kw)


def test_nested_unet_shapes_levels_and_zero_init():
    torch.manual_seed(0)
    m = small_mdm()
    xs = [torch.randn(2, 3, r, r) for r in (16, 8, 4)]
    outs = m.net(xs, torch.rand(2), y=torch.tensor([0, 1]))
    assert [o.shape[-1] for o in outs] == [16, 8, 4]
    assert all(torch.equal(o, torch.zeros_like(o)) for o in outs)
    assert [o.shape[-1] for o in m.net(xs[1:], torch.rand(2), levels=2)] == [8, 4]
    with pytest.raises(ValueError):
        m.net(xs[:2], torch.rand(2))


def test_nested_unet_low_res_is_inside_high_res():
    """The inner UNet's output depends on the high-res input (outer encoder feeds it) and the
    outer output depends on the low-res input (inner decoder feeds it)."""
    torch.manual_seed(0)
    m = small_mdm()
    with torch.no_grad():
        for p in m.net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    xs = [torch.randn(1, 3, r, r) for r in (16, 8, 4)]
    t = torch.full((1,), 0.5)
    base = m.net(xs, t)
    hi = m.net([xs[0] + 1, xs[1], xs[2]], t)
    lo = m.net([xs[0], xs[1], xs[2] + 1], t)
    assert (hi[2] - base[2]).abs().max() > 1e-5
    assert (lo[0] - base[0]).abs().max() > 1e-5
    assert isinstance(m.net.levels[-1].unet, UNet)


def test_mdm_shifted_schedules_and_packing():
    m = small_mdm()
    t = torch.tensor([0.3, 0.7])
    torch.testing.assert_close(m.schedule_for(16).snr(t), m.base.snr(t) / 16)
    torch.testing.assert_close(m.schedule_for(4).snr(t), m.base.snr(t))
    ps = m.packed_schedule()
    a, s = ps.alpha_sigma(torch.tensor(0.5, dtype=torch.float64))
    assert a.shape == (1, 3 * (256 + 64 + 16))
    a16, _ = ShiftedSchedule(CosineSchedule(), 4.0).alpha_sigma(0.5)
    assert torch.allclose(a[0, 0], a16) and isinstance(ps, PackedSchedule)
    xs = [torch.randn(2, 3, r, r) for r in (16, 8, 4)]
    back = unpack(pack(xs), [(3, r, r) for r in (16, 8, 4)])
    assert all(torch.equal(x, y) for x, y in zip(xs, back, strict=True))
    assert [active_levels(s, [10, 20], 3) for s in (0, 9, 10, 25)] == [1, 1, 2, 3]


def test_mdm_progressive_training_and_joint_sampling(one_thread):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    m = small_mdm(loss_weights=[1.0, 1.0, 1.0])
    data = torch.linspace(-1, 1, 16).expand(3, 16, 16)[None].repeat(16, 1, 1, 1)
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)

    def eval_loss(levels):
        with torch.no_grad():
            return float(m.loss(data, levels=levels, generator=torch.Generator().manual_seed(9))[0])

    before = eval_loss(3)
    for step in range(30):
        levels = active_levels(step, [10, 20], 3)  # low resolution first, then grow
        loss, parts = m.loss(data, levels=levels, generator=g)
        assert len(parts) == levels
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert eval_loss(3) < 0.8 * before
    y = torch.tensor([0, 1])
    for sampler in ("ddim", "dpmpp2m", "ddpm"):
        outs = m.sample(2, sampler=sampler, steps=3, y=y, cfg_scale=2.0,
                        generator=torch.Generator().manual_seed(0))
        assert [o.shape for o in outs] == [(2, 3, r, r) for r in (16, 8, 4)]
        assert all(torch.isfinite(o).all() for o in outs)


def test_mdm_growth_leaves_trained_inner_levels_unchanged(one_thread):
    """Progressive training: after training the inner levels, growing one more level (its
    zero-initialised adapters untouched while it was inactive, AdamW with weight decay) gives
    exactly the inner levels' previous outputs, and the new level predicts 0; two steps later
    the adapters have learned, so the levels are joined."""
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    m = small_mdm(loss_weights=[16.0, 4.0, 1.0])
    data = torch.linspace(-1, 1, 16).expand(3, 16, 16)[None].repeat(8, 1, 1, 1)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.1)
    xs = [torch.randn(2, 3, r, r, generator=g) for r in (16, 8, 4)]
    t, y = torch.tensor([0.3, 0.8]), torch.tensor([0, 1])

    def train(levels, steps):
        for _ in range(steps):
            opt.zero_grad()
            m.loss(data, levels=levels, generator=g)[0].backward()
            opt.step()

    for levels in (1, 2):
        train(levels, 5)
        with torch.no_grad():
            before = m.net(xs[3 - levels:], t, y=y, levels=levels)
            after = m.net(xs[2 - levels:], t, y=y, levels=levels + 1)
        assert before[0].abs().max() > 0  # the inner levels did learn something
        assert all(torch.equal(a, b) for a, b in zip(after[1:], before, strict=True))
        assert torch.equal(after[0], torch.zeros_like(after[0]))
    shell = m.net.levels[0]
    assert shell.in_adapter.conv.weight.abs().max() == 0
    train(3, 2)  # step 1 moves the zero output conv, then the adapters
    assert shell.in_adapter.conv.weight.abs().max() > 0
    assert shell.out_adapter.conv.weight.abs().max() > 0


def test_mdm_shift_power():
    """snr_l = snr * (R_low / R_l)^p: p = 2 (simple diffusion, ml-mdm 1024), p = 1 (ml-mdm
    256)."""
    t = torch.tensor([0.2, 0.6])
    m1, m2 = small_mdm(shift_power=1.0), small_mdm()
    torch.testing.assert_close(m1.schedule_for(16).snr(t), m1.base.snr(t) / 4)
    torch.testing.assert_close(m1.schedule_for(8).snr(t), m1.base.snr(t) / 2)
    torch.testing.assert_close(m2.schedule_for(8).snr(t), m2.base.snr(t) / 4)
    assert m1.schedule_for(4) is m1.base


# ---------------------------------------------------------------------------- f-DM
def _images(n=3000, res=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, res), torch.linspace(-1, 1, res), indexing="ij")
    amp = torch.randn(n, 1, 1, 1, generator=g)
    return (0.5 * amp * xx + 0.3 * yy * torch.sign(amp) + 0.1).expand(n, 2, res, res).contiguous()


def _stats(z, ref):
    """Per-pixel mean and std, and the regression coefficient onto the reference signal."""
    zc, rc = z - z.mean(0), ref - ref.mean(0)
    return z.mean(0), z.std(0).mean(), (zc * rc).sum() / rc.pow(2).sum()


TOL = (0.06, 0.02, 0.03)  # per-pixel mean, average std, regression coefficient


@pytest.mark.parametrize("eps_t", [0.0, 1e-3])
def test_fdm_downsample_marginals_agree_across_boundary(eps_t):
    f = FDM(CosineSchedule(), num_stages=3)
    x0 = _images()
    g = torch.Generator().manual_seed(1)
    for k in range(2):
        tau = f.tau[k + 1]
        before, _, kb = f.q_sample(x0, tau - eps_t, generator=g, stage=k)
        after, x_next, ka = f.q_sample(x0, tau + eps_t, generator=g, stage=k + 1)
        assert (kb, ka) == (k, k + 1) and before.shape[-1] == 2 * after.shape[-1]
        mapped = f.to_next_stage(before, k)
        for a, b, tol in zip(_stats(mapped, x_next), _stats(after, x_next), TOL, strict=True):
            assert (a - b).abs().max() < tol, (k, (a - b).abs().max())
        # a naive map (average pooling without renormalisation) is detected
        naive = torch.nn.functional.avg_pool2d(before, 2)
        assert any((a - b).abs().max() > tol for a, b, tol in
                   zip(_stats(naive, x_next), _stats(after, x_next), TOL, strict=True))
        # SNR continuity: the stage schedules differ by exactly the 4x of 2x downsampling
        lam_k = f.schedule(k).log_snr(tau)
        assert abs(float(f.schedule(k + 1).log_snr(tau) - lam_k) - math.log(4)) < 1e-9
        # reverse map: coarse state + re-injected detail noise has the fine-side marginal
        back = f.to_prev_stage(after, k + 1, generator=g)
        for a, b, tol in zip(_stats(back, f.stage_signal(x0, k)),
                             _stats(before, f.stage_signal(x0, k)), TOL, strict=True):
            assert (a - b).abs().max() < tol, (k, (a - b).abs().max())


def test_fdm_boundary_map_exact_in_distribution():
    """avgpool of the noise halves its std; the boundary map restores unit-variance noise."""
    f = FDM(CosineSchedule(), num_stages=2)
    x0 = torch.zeros(4000, 1, 8, 8)
    z, _, _ = f.q_sample(x0, f.tau[1], generator=torch.Generator().manual_seed(0), stage=0)
    zn = f.to_next_stage(z, 0)
    _, s_next = f.coeffs(1, f.tau[1])
    assert abs(float(zn.std()) - s_next) < 0.01


def test_fdm_blur_stages_continuous():
    f = FDM(CosineSchedule(), num_stages=3, transform="blur")
    x0 = _images(res=16)
    tau = f.tau[1]
    torch.testing.assert_close(f.signal(f.stage_signal(x0, 0), 0, tau), f.stage_signal(x0, 1),
                               atol=2e-2, rtol=0)
    assert f.resolution(16, 2) == 16 and torch.equal(f.to_next_stage(x0, 0), x0)


def test_fdm_training_and_sampling(one_thread):
    torch.manual_seed(0)
    f = FDM(CosineSchedule(), num_stages=3)
    net = UNet(3, channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
               resolution=16, num_classes=2)
    data = torch.linspace(-1, 1, 16).expand(3, 16, 16)[None].repeat(16, 1, 1, 1)
    y = torch.tensor([0, 1]).repeat(8)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    g = torch.Generator().manual_seed(0)

    def eval_loss():
        with torch.no_grad():
            return float(f.loss(net, data, generator=torch.Generator().manual_seed(5), y=y)[0])

    before = eval_loss()
    for _ in range(25):
        loss, parts = f.loss(net, data, generator=g, y=y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert eval_loss() < 0.8 * before
    out, finals = f.sample(net, 2, 3, 16, steps=6, eta=0.5, model_kwargs={"y": y[:2]},
                           cfg_scale=2.0, uncond={"y": torch.full((2,), 2)},
                           generator=torch.Generator().manual_seed(0), return_stages=True)
    assert out.shape == (2, 3, 16, 16) and [z.shape[-1] for z in finals] == [4, 8, 16]
    assert torch.isfinite(out).all()
    assert f.steps_per_stage(6) == [2, 2, 2] and sum(f.steps_per_stage(50)) == 50
