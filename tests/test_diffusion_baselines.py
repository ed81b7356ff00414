"""The multi-scale comparison's baselines: cascaded diffusion (SR stage conditioning, noise
conditioning augmentation, NFE split) and latent diffusion (KL autoencoder, latent scaling,
two stages)."""

import pytest
import torch

from neural3d.diffusion import CosineSchedule, DiffusionObjective, UNet
from neural3d.diffusion.autoencoder import KLAutoencoder, PatchDiscriminator, autoencoder_loss
from neural3d.diffusion.cascade import CascadedDiffusion, SRConditioned
from neural3d.diffusion.latent import LatentDiffusion
from neural3d.methods.diffusion2d import load_toy_images
from neural3d.methods.diffusion2d.config import DataConfig

pytestmark = pytest.mark.usefixtures("one_thread")

SMALL = dict(channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=())


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def perturb(module, scale=0.05):
    """Move every weight off its (partly zero) initialisation, so that every path matters."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * scale)
    return module


def small_cascade(aug_max=0.5):
    obj = DiffusionObjective(CosineSchedule(), "v")
    base = UNet(3, resolution=8, num_classes=2, **SMALL)
    sr = SRConditioned(UNet(3, resolution=16, num_classes=2, cond_channels=3, **SMALL))
    return CascadedDiffusion(base, sr, obj, DiffusionObjective(CosineSchedule(), "v"), 8,
                             aug_max, null_label=2)


# ---------------------------------------------------------------------------- cascade
def test_sr_stage_reads_the_low_res_image_and_the_augmentation_level():
    torch.manual_seed(0)
    sr = perturb(small_cascade().sr)
    x, t, y = torch.randn(2, 3, 16, 16), torch.tensor([0.3, 0.6]), torch.tensor([0, 1])
    low = torch.randn(2, 3, 8, 8)
    out = sr(x, t, y=y, low=low, aug=torch.tensor([0.1, 0.1]))
    assert out.shape == (2, 3, 16, 16)
    other_low = sr(x, t, y=y, low=low + 1, aug=torch.tensor([0.1, 0.1]))
    other_aug = sr(x, t, y=y, low=low, aug=torch.tensor([0.4, 0.4]))
    assert (other_low - out).abs().max() > 1e-4
    assert (other_aug - out).abs().max() > 1e-4
    # the low-res image is bilinearly upsampled and concatenated: zeros = no image
    torch.testing.assert_close(sr(x, t, y=y, low=None), sr(x, t, y=y, low=torch.zeros_like(low)))
    # the change of the low-res image stays local: one corner of it moves the output corner
    # most
    corner = low.clone()
    corner[..., :2, :2] += 3
    d = (sr(x, t, y=y, low=corner, aug=torch.tensor([0.1, 0.1])) - out).abs().sum((0, 1))
    assert d[:4, :4].mean() > 3 * d[8:, 8:].mean()
    with pytest.raises(ValueError, match="cond_channels"):
        SRConditioned(UNet(3, resolution=16, **SMALL))


def test_conditioning_augmentation():
    c = small_cascade()
    low = torch.linspace(-1, 1, 64).reshape(1, 1, 8, 8).expand(4000, 3, 8, 8)
    assert torch.equal(c.augment(low[:2], torch.zeros(2)), low[:2])
    s = torch.full((4000,), 0.4)
    z = c.augment(low, s, torch.Generator().manual_seed(0))
    a, sigma = CosineSchedule().alpha_sigma(torch.tensor(0.4, dtype=torch.float64))
    torch.testing.assert_close(z.mean(0), float(a) * low[0], atol=0.05, rtol=0)
    assert abs(float((z - float(a) * low).std()) - float(sigma)) < 0.01


def test_cascade_loss_trains_both_stages_and_sampling_splits_the_evaluations():
    torch.manual_seed(0)
    c = small_cascade()
    x0, y = torch.rand(4, 3, 16, 16) * 2 - 1, torch.tensor([0, 1, 0, 1])
    loss, parts = c.loss(x0, y, torch.Generator().manual_seed(0))
    loss.backward()
    assert set(parts) == {"loss_base", "loss_sr"}
    assert torch.allclose(loss, parts["loss_base"] + parts["loss_sr"])
    assert c.base.out[-1].weight.grad.abs().max() > 0
    assert c.sr.unet.out[-1].weight.grad.abs().max() > 0
    calls = {"base": 0, "sr": 0}

    def count(name):
        return lambda *_: calls.__setitem__(name, calls[name] + 1)

    for name in calls:
        getattr(c, name).register_forward_hook(count(name))
    high, low = c.sample(2, 3, 16, y=torch.tensor([0, 1]), cfg_scale=2.0, steps=10,
                         base_fraction=0.3, generator=torch.Generator().manual_seed(0),
                         thresholding="clip")
    assert high.shape == (2, 3, 16, 16) and low.shape == (2, 3, 8, 8)
    assert calls == {"base": 3, "sr": 7}  # 10 evaluations (CFG batched) in all
    assert torch.isfinite(high).all() and low.abs().max() <= 1


# ---------------------------------------------------------------------------- latent
def toy_images(tmp_path, res=16):
    cfg = DataConfig(root=str(tmp_path / "toy"), objects=2, views=6, res=res, supersample=1)
    return load_toy_images(cfg, progress=False)


def psnr(a, b):
    return float(-10 * torch.log10(((a.clamp(-1, 1) - b) / 2).pow(2).mean()))


def test_autoencoder_reconstructs_toy_images(tmp_path):
    """150 steps on 24 toy renders (16x16, f = 2): PSNR above 16 dB (the mean image scores
    about 12 dB)."""
    x, _ = toy_images(tmp_path)
    torch.manual_seed(0)
    ae = KLAutoencoder(3, latent_channels=3, channels=16, levels=1)
    opt = torch.optim.Adam(ae.parameters(), 2e-3)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        loss, parts = autoencoder_loss(ae, x[torch.randint(len(x), (8,), generator=g)],
                                       1e-6, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        mean, logvar = ae.encode(x)
        rec = ae.decode(mean)
    assert mean.shape == (len(x), 3, 8, 8)
    assert psnr(x.mean(0, keepdim=True).expand_as(x), x) < 13
    assert psnr(rec, x) > 16

    # latent scaling: the std of the scaled posterior means over the training set is 1
    ldm = LatentDiffusion(ae, UNet(3, resolution=8, num_classes=2, **SMALL),
                          DiffusionObjective(CosineSchedule(), "v"), ae_steps=150, null_label=2)
    with pytest.raises(RuntimeError, match="fit_scale"):
        ldm.encode(x)
    std = ldm.fit_scale(x, batch=5)
    assert abs(std - float(mean.double().std())) < 1e-6
    z = ldm.encode(x, sample=False)
    assert abs(float(z.detach().double().std()) - 1) < 1e-5
    with torch.no_grad():
        torch.testing.assert_close(ldm.decode(z), rec, atol=1e-5, rtol=1e-5)
    assert "latent_std" in ldm.state_dict()


def test_latent_diffusion_stages():
    torch.manual_seed(0)
    ae = KLAutoencoder(3, 3, channels=8, levels=1)
    ldm = LatentDiffusion(ae, UNet(3, resolution=8, num_classes=2, **SMALL),
                          DiffusionObjective(CosineSchedule(), "v"), ae_steps=5, null_label=2,
                          discriminator=PatchDiscriminator(3, 8, layers=2), disc_start=2)
    x, y = torch.rand(4, 3, 16, 16) * 2 - 1, torch.tensor([0, 1, 0, 1])

    def grads(step):
        ldm.zero_grad(set_to_none=True)
        loss, parts = ldm.loss(x, y, step, torch.Generator().manual_seed(0))
        loss.backward()
        return parts, {n: any(p.grad is not None and p.grad.abs().max() > 0
                              for p in getattr(ldm, n).parameters())
                       for n in ("autoencoder", "denoiser", "discriminator")}

    parts, got = grads(0)  # autoencoder only, discriminator not yet on
    assert set(parts) == {"ae_rec", "ae_kl"} and got == {"autoencoder": True, "denoiser": False,
                                                         "discriminator": False}
    parts, got = grads(3)  # + the discriminator (hinge), one loss for both players
    assert set(parts) == {"ae_rec", "ae_kl", "ae_g", "ae_d"} and got["discriminator"]
    with pytest.raises(RuntimeError, match="fit_scale"):
        grads(5)
    ldm.fit_scale(x)
    _, got = grads(5)  # latent diffusion: the autoencoder is frozen
    assert got == {"autoencoder": False, "denoiser": True, "discriminator": False}
    out = ldm.sample(2, y=torch.tensor([0, 1]), cfg_scale=2.0, steps=2,
                     generator=torch.Generator().manual_seed(0))
    assert out.shape == (2, 3, 16, 16) and torch.isfinite(out).all()


def test_generator_term_does_not_train_the_discriminator():
    """The hinge generator term reaches the autoencoder only; the discriminator term the
    discriminator only."""
    torch.manual_seed(0)
    ae, disc = KLAutoencoder(3, 3, channels=8, levels=1), PatchDiscriminator(3, 8, layers=2)
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    g = torch.Generator().manual_seed(0)
    loss_w, _ = autoencoder_loss(ae, x, 0.0, disc, disc_weight=1.0, generator=g)
    loss_w.backward()
    d_with = [p.grad.clone() for p in disc.parameters()]
    ae.zero_grad()
    disc.zero_grad()
    loss_0, _ = autoencoder_loss(ae, x, 0.0, disc, disc_weight=0.0,
                                 generator=torch.Generator().manual_seed(0))
    loss_0.backward()
    for a, b in zip(d_with, disc.parameters(), strict=True):
        torch.testing.assert_close(a, b.grad)
