"""U-Net and DiT: shapes, zero-init, conditioning, CFG null label, a few training steps."""

import pytest
import torch

from neural3d.diffusion import CosineSchedule, classifier_free_guidance, diffusion_loss, sample
from neural3d.diffusion.dit import DiT
from neural3d.diffusion.unet import UNet, drop_labels

pytestmark = pytest.mark.usefixtures("one_thread")


def small_unet(**kw):
    args = dict(in_channels=3, channels=16, channel_mult=(1, 2), num_res_blocks=1,
                attention_resolutions=(8,), resolution=16)
    args.update(kw)
    return UNet(**args)


def small_dit(**kw):
    args = dict(in_channels=3, resolution=16, patch=4, dim=32, depth=2, heads=2)
    args.update(kw)
    return DiT(**args)


def perturb(model, std=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return model


@pytest.mark.parametrize("make", [small_unet, small_dit])
def test_shapes_and_zero_output_at_init(make):
    torch.manual_seed(0)
    m = make(num_classes=2)
    x, t = torch.randn(3, 3, 16, 16), torch.rand(3)
    out = m(x, t, y=torch.tensor([0, 1, 2]))
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))  # zero-init output layer / adaLN-Zero


def test_dit_blocks_are_identity_at_init():
    torch.manual_seed(0)
    m = small_dit(num_classes=2)
    tok, c = torch.randn(2, 16, 32), torch.randn(2, 32)
    for blk in m.blocks:
        assert torch.equal(blk(tok, c), tok)


def test_unet_resblocks_identity_at_init():
    torch.manual_seed(0)
    m = small_unet()
    blk = m.mid[0]
    h = torch.randn(2, blk.conv1.in_channels, 8, 8)
    assert torch.equal(blk(h, torch.randn(2, 64)), h)


@pytest.mark.parametrize("make", [small_unet, small_dit])
def test_class_and_time_conditioning_change_output(make):
    torch.manual_seed(0)
    m = perturb(make(num_classes=2)).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.full((2,), 0.5)
    a = m(x, t, y=torch.tensor([0, 0]))
    b = m(x, t, y=torch.tensor([1, 1]))
    null = m(x, t, y=torch.full((2,), m.null_label))
    assert (a - b).abs().mean() > 1e-4 and (a - null).abs().mean() > 1e-4
    torch.testing.assert_close(m(x, t, y=None), null)  # y=None is the null label
    assert (m(x, torch.full((2,), 0.1), y=torch.tensor([0, 0])) - a).abs().mean() > 1e-4


def test_unet_image_conditioning_by_concatenation():
    torch.manual_seed(0)
    m = perturb(small_unet(cond_channels=3)).eval()
    x, t = torch.randn(2, 3, 16, 16), torch.rand(2)
    c = torch.randn(2, 3, 16, 16)
    assert m.in_conv.in_channels == 6
    assert (m(x, t, cond=c) - m(x, t, cond=None)).abs().mean() > 1e-4
    with pytest.raises(ValueError):
        small_unet()(x, t, cond=c)


def test_cfg_with_null_label_on_network():
    torch.manual_seed(0)
    m = perturb(small_unet(num_classes=2)).eval()
    x, t, y = torch.randn(2, 3, 16, 16), torch.full((2,), 0.4), torch.tensor([0, 1])
    null = torch.full((2,), m.null_label)
    with torch.no_grad():
        g = classifier_free_guidance(m, 2.0, {"y": null})(x, t, y=y)
        c, u = m(x, t, y=y), m(x, t, y=null)
    torch.testing.assert_close(g, u + 2.0 * (c - u), atol=1e-5, rtol=1e-4)
    out = sample(classifier_free_guidance(m, 3.0, {"y": null}), (2, 3, 16, 16),
                 CosineSchedule(), sampler="dpmpp2m", steps=2, model_kwargs={"y": y},
                 generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()


def test_drop_labels():
    y = torch.zeros(1000, dtype=torch.long)
    d = drop_labels(y, 0.3, 5, torch.Generator().manual_seed(0))
    assert 0.25 < (d == 5).float().mean() < 0.35 and set(d.tolist()) <= {0, 5}


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("make", [small_unet, small_dit])
def test_training_steps_reduce_loss(make, one_thread):
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    # tiny dataset: two classes, two fixed 8x8 patterns
    base = torch.stack([torch.linspace(-1, 1, 8).expand(8, 8),
                        torch.linspace(-1, 1, 8).expand(8, 8).T])
    data = base[:, None].expand(2, 3, 8, 8).contiguous()
    labels = torch.tensor([0, 1])
    m = make(num_classes=2, resolution=8, **({"attention_resolutions": (4,)}
                                             if make is small_unet else {"patch": 2}))
    opt = torch.optim.Adam(m.parameters(), lr=2e-3)
    sched = CosineSchedule()

    def eval_loss():
        gg = torch.Generator().manual_seed(123)
        with torch.no_grad():
            return float(sum(diffusion_loss(m, data.repeat(16, 1, 1, 1), sched,
                                            parameterization="v", generator=gg,
                                            y=labels.repeat(16))
                             for _ in range(2)))

    before = eval_loss()
    for _ in range(30):
        idx = torch.randint(0, 2, (16,), generator=g)
        loss = diffusion_loss(m, data[idx], sched, parameterization="v", generator=g, y=labels[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert eval_loss() < 0.7 * before
