"""SSDNeRF's reference-code switches: tanh code activation, x0 clipping, the concatenated
decoder with its spherical-harmonics view branch, DDPMMSELossMod scaling, per-object
reconstruction seeds."""

import dataclasses
import math

import pytest
import torch

from neural3d.diffusion import CosineSchedule, MeasurementGuidance, sample
from neural3d.fields.encodings import spherical_harmonics
from neural3d.fields.triplane import TriplaneField, ViewDependentDecoder
from neural3d.methods.ssdnerf import SSDNeRFModel, guided_sample, load_split, load_ssdnerf, train
from neural3d.methods.ssdnerf.config import tiny_config
from neural3d.methods.ssdnerf.model import reference_pixel_scale
from neural3d.methods.ssdnerf.recon import object_seed


@pytest.fixture(autouse=True)
def _torch_backend(monkeypatch):
    monkeypatch.setenv("NEURAL3D_BACKEND", "torch")
    torch.set_num_threads(1)


def reference_config(root, out, **train_kw):
    cfg = tiny_config(root, out, **train_kw)
    cfg.model = dataclasses.replace(cfg.model, code_activation="tanh", decoder="view_sh",
                                    plane_aggregate="concat")
    cfg.diffusion = dataclasses.replace(cfg.diffusion, clip_x0=2.0)
    cfg.loss = dataclasses.replace(cfg.loss, scaling="reference")
    return cfg


def fibonacci_sphere(n: int) -> torch.Tensor:
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = 1 - 2 * i / n
    phi = math.pi * (3 - math.sqrt(5)) * i
    r = (1 - z * z).sqrt()
    return torch.stack([r * phi.cos(), r * phi.sin(), z], -1)


def test_spherical_harmonics_are_orthonormal_on_the_sphere():
    d = fibonacci_sphere(40000)
    y = spherical_harmonics(d)                      # [N, 16]
    gram = y.T @ y * (4 * math.pi / len(d))         # quadrature of ∫ Y_i Y_j dΩ
    assert y.shape == (40000, 16)
    assert torch.allclose(gram, torch.eye(16, dtype=gram.dtype), atol=2e-3)
    assert spherical_harmonics(d, degree=2).shape == (40000, 4)
    with pytest.raises(ValueError, match="degree"):
        spherical_harmonics(d, degree=5)


def test_view_branch_starts_at_zero_then_makes_colour_view_dependent():
    torch.manual_seed(0)
    dec = ViewDependentDecoder(in_channels=18, hidden=64)
    f = torch.randn(32, 18)
    d1, d2 = torch.nn.functional.normalize(torch.randn(2, 32, 3), dim=-1)
    s1, c1 = dec(f, d1)
    s2, c2 = dec(f, d2)
    assert torch.equal(s1, s2) and torch.equal(c1, c2)       # zero-initialised direction layer
    assert (s1 >= 0).all() and c1.min() >= -0.001 and c1.max() <= 1.001
    with torch.no_grad():
        dec.direction.weight.normal_()
    assert torch.equal(dec(f, d1)[0], s1)                    # density never sees the direction
    assert not torch.allclose(dec(f, d1)[1], dec(f, d2)[1])


def test_triplane_field_view_sh_concatenates_and_needs_directions():
    fld = TriplaneField(resolution=8, channels=6, hidden=64, aggregate="concat",
                        decoder="view_sh", learn_planes=True)
    assert fld.decoder.base.in_features == 18
    pos = torch.rand(5, 7, 3) * 2 - 1
    sigma, rgb = fld(pos, torch.nn.functional.normalize(torch.randn(5, 7, 3), dim=-1))
    assert sigma.shape == (5, 7) and rgb.shape == (5, 7, 3)
    with pytest.raises(ValueError, match="needs directions"):
        fld(pos)
    with pytest.raises(ValueError, match="decoder must be"):
        TriplaneField(decoder="sh")


def test_tanh_code_round_trip_and_bound(tmp_path):
    model = SSDNeRFModel(reference_config(tmp_path / "d", tmp_path / "r"))
    code_ = torch.randn(2, *model.latent_shape) * 3
    code = model.activate(code_)
    assert code.abs().max() <= 2 and torch.allclose(code, 2 * torch.tanh(code_))
    inner = torch.rand(2, *model.latent_shape) * 3.8 - 1.9
    assert torch.allclose(model.activate(model.deactivate(inner)), inner, atol=1e-5)
    plain = SSDNeRFModel(tiny_config(tmp_path / "d", tmp_path / "r"))
    assert plain.activate(code_) is code_ and plain.deactivate(code_) is code_


def test_clip_x0_bounds_every_sample(tmp_path):
    torch.manual_seed(0)
    cfg = reference_config(tmp_path / "d", tmp_path / "r")
    cfg.diffusion = dataclasses.replace(cfg.diffusion, clip_x0=0.05)
    model = SSDNeRFModel(cfg)
    x_T = torch.randn(2, 3 * model.C, model.R, model.R, generator=torch.Generator().manual_seed(1))
    clipped = model.sample(2, x_T=x_T.clone(), steps=3)
    cfg.diffusion = dataclasses.replace(cfg.diffusion, clip_x0=0.0)
    free = model.sample(2, x_T=x_T.clone(), steps=3)
    assert clipped.abs().max() <= 0.05 + 1e-7
    assert free.abs().max() > 0.05


def test_thresholding_applies_before_measurement_guidance():
    seen = []

    def loss_fn(x0):
        seen.append(float(x0.detach().abs().max()))
        return x0.pow(2).sum()

    def net(x, t):
        return 10 * x  # an x0-prediction far outside the clip range

    sample(net, (1, 2, 4, 4), CosineSchedule(), sampler="ddim", steps=3, parameterization="x0",
           guidance=[MeasurementGuidance(loss_fn, scale=0.1, wrt="x0")], thresholding="clip",
           clip=0.5, generator=torch.Generator().manual_seed(0))
    assert seen and max(seen) <= 0.5


def test_reference_loss_scaling_divides_by_a_running_mean_of_x0_squared(tmp_path):
    torch.manual_seed(0)
    cfg = reference_config(tmp_path / "d", tmp_path / "r")
    model = SSDNeRFModel(cfg).train()
    plain_cfg = dataclasses.replace(cfg, loss=dataclasses.replace(cfg.loss, scaling="plain"))
    plain = SSDNeRFModel(plain_cfg)
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if k != "norm_factor"})
    x0 = torch.randn(2, *model.latent_shape) * 1.5
    ref = model.diffusion_loss(x0, torch.Generator().manual_seed(3))
    factor = 0.999 * 1.0 + 0.001 * float(x0.pow(2).mean())
    assert float(model.norm_factor) == pytest.approx(factor, rel=1e-6)
    base = plain.diffusion_loss(x0, torch.Generator().manual_seed(3))
    assert float(ref.detach()) == pytest.approx(0.5 * float(base.detach()) / factor, rel=1e-5)
    model.eval()
    model.diffusion_loss(x0, torch.Generator().manual_seed(3))
    assert float(model.norm_factor) == pytest.approx(factor, rel=1e-6)   # frozen in eval
    assert "norm_factor" in model.state_dict() and "norm_factor" not in plain.state_dict()
    assert reference_pixel_scale(torch.tensor([50]))[0] == pytest.approx(3 * (1 - math.exp(-5)))


def test_reference_switches_train_and_store_pre_activations(tmp_path):
    cfg = reference_config(tmp_path / "d", tmp_path / "run", steps=3)
    cfg.optim.latent_init_std = 0.5
    trainer = train(cfg)
    assert all(math.isfinite(h["loss"]) for h in trainer.history)
    ck = torch.load(tmp_path / "run/checkpoints/last.pt", weights_only=False)
    raw = ck["optimizers"]["latents"]["cache"]["latents"]
    loaded = load_ssdnerf(tmp_path / "run/checkpoints/last.pt")
    assert torch.allclose(loaded.latents, 2 * torch.tanh(raw), atol=1e-6)
    assert float(loaded.model.norm_factor) != 1.0      # the running mean was saved


def test_each_object_gets_its_own_noise(tmp_path):
    cfg = tiny_config(tmp_path / "d", tmp_path / "r")
    cfg.recon = dataclasses.replace(cfg.recon, guidance_scale=0.0)   # plain samples from x_T
    model = SSDNeRFModel(cfg)
    test = load_split(cfg.data, "test")
    (ia, ca), (ib, cb) = (test.views(i) for i in (0, 1))
    ia, ca, ib, cb = ia[:1], ca[:1], ib[:1], cb[:1]
    assert object_seed(ia) == object_seed(ia.clone()) != object_seed(ib)
    sa = guided_sample(model, ia, ca, cfg.recon)
    assert torch.equal(sa, guided_sample(model, ia.clone(), ca, cfg.recon))
    assert not torch.allclose(sa, guided_sample(model, ib, cb, cfg.recon))


def test_warmup_rises_linearly_from_the_ratio():
    from neural3d.methods.ssdnerf.train import warmup_scheduler

    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = warmup_scheduler(opt, 500, 1e-3)
    lrs = []
    for _ in range(502):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(1e-3) and lrs[250] == pytest.approx(1e-3 + 0.999 * 0.5)
    assert lrs[500] == lrs[501] == 1.0
    assert warmup_scheduler(opt, 0, 1e-3) is None


def _one_step(cfg):
    from neural3d.methods.ssdnerf import build, make_step_fn
    from neural3d.train import Trainer

    data = load_split(cfg.data, "train")
    model, cache, opts = build(cfg, len(data))
    start = cache.latents.clone()
    trainer = Trainer(model, opts, cfg.train)
    trainer.fit(make_step_fn(trainer, model, opts["latents"], data, cfg), steps=1)
    return model, cache, start


def test_inner_loop_reuses_the_prior_gradient_and_steps_the_unet_once(tmp_path):
    """No rendering loss or regulariser: every latent step sees the same (cached) prior
    gradient g, so each Adam step moves a latent by the same lr * g / (|g| + eps): with K_in = 3
    every latent moves exactly 3 times as far as with K_in = 1, in the same direction; the
    U-Net takes the same single step either way."""
    runs = {}
    for k in (1, 3):
        cfg = tiny_config(tmp_path / "d", tmp_path / f"r{k}", steps=1)
        cfg.loss = dataclasses.replace(cfg.loss, render_weight=0.0, reg_weight=0.0)
        cfg.optim = dataclasses.replace(cfg.optim, latent_init_std=0.1, batch_objects=4,
                                        inner_steps=k)
        runs[k] = _one_step(cfg)
    (_, c1, s1), (_, c3, s3) = runs[1], runs[3]
    assert torch.equal(s1, s3) and c1.steps.tolist() == [1] * 4 and c3.steps.tolist() == [3] * 4
    moved1, moved3 = c1.latents - s1, c3.latents - s3
    assert (moved1.abs() > 0.5 * cfg.optim.latent_lr).float().mean() > 0.9
    assert torch.allclose(moved3, 3 * moved1, rtol=1e-4, atol=1e-7)
    for (n, p), q in zip(runs[1][0].unet.named_parameters(), runs[3][0].unet.parameters(),
                         strict=True):
        assert torch.equal(p, q), n


def test_inner_steps_schedule(tmp_path):
    from neural3d.config import ConfigError, load_config
    from neural3d.methods.ssdnerf.config import SSDNeRFConfig
    from neural3d.methods.ssdnerf.train import inner_steps

    cfg = tiny_config(tmp_path / "d", tmp_path / "r")
    o = dataclasses.replace(cfg.optim, inner_steps=16, inner_steps_after=[[2000, 4], [5000, 2]])
    assert [inner_steps(o, s) for s in (0, 1999, 2000, 4999, 5000)] == [16, 16, 4, 4, 2]
    with pytest.raises(ConfigError, match="inner_steps_after"):
        load_config(SSDNeRFConfig, None, ["optim.inner_steps_after=[[10]]"])


def test_snr_power_guidance_takes_the_reference_x0_step():
    """x0 -= scale * sigma^(2-2w) * alpha^(2w-1) * dL/dx0 for L = |x0 - y|^2 / 2 (wrt x0)."""
    x0 = torch.randn(1, 2, 3, 3, dtype=torch.float64)
    y = torch.randn_like(x0)
    x_t = torch.randn_like(x0)
    alpha, sigma = torch.tensor(0.8, dtype=torch.float64), torch.tensor(0.6, dtype=torch.float64)
    eps = (x_t - alpha * x0) / sigma
    for w in (0.25, 0.5):
        guide = MeasurementGuidance(lambda x: 0.5 * (x - y).pow(2).sum(), scale=0.3,
                                    snr_power=w)
        new_eps = guide.apply(x_t, None, x0, eps, alpha, sigma, {})
        new_x0 = (x_t - sigma * new_eps) / alpha
        want = x0 - 0.3 * sigma ** (2 - 2 * w) * alpha ** (2 * w - 1) * (x0 - y)
        assert torch.allclose(new_x0, want, atol=1e-12)


def test_finetune_caches_the_prior_gradient_and_scales_the_observed_loss(tmp_path,
                                                                        monkeypatch):
    from neural3d.methods.ssdnerf.recon import finetune, observed_scale

    cfg = reference_config(tmp_path / "d", tmp_path / "r")
    model = SSDNeRFModel(cfg)
    test = load_split(cfg.data, "test")
    images, cams = test.views(0)
    assert observed_scale(model, images[:1]) == pytest.approx(20 * 3 * (1 - math.exp(-0.1)))
    calls = []
    real = SSDNeRFModel.diffusion_loss
    monkeypatch.setattr(SSDNeRFModel, "diffusion_loss",
                        lambda self, *a, **k: calls.append(1) or real(self, *a, **k))
    rc = dataclasses.replace(cfg.recon, finetune_steps=10, finetune_prior_every=4,
                             finetune_lr_decay=0.9, finetune_reg_weight=3e-3, finetune_rays=0)
    init = torch.zeros(1, *model.latent_shape)
    out = finetune(model, init, images[:1], cams[:1], rc)
    assert len(calls) == 3                                   # steps 0, 4 and 8
    assert out.shape == init.shape and out.abs().max() <= 2 and not torch.equal(out, init)


def test_running_norm_freezes_after_its_step(tmp_path):
    from neural3d.methods.ssdnerf import build, make_step_fn
    from neural3d.train import Trainer

    cfg = reference_config(tmp_path / "d", tmp_path / "r", steps=3)
    cfg.loss = dataclasses.replace(cfg.loss, freeze_norm_after=2)
    data = load_split(cfg.data, "train")
    model, _, opts = build(cfg, len(data))
    trainer = Trainer(model, opts, cfg.train)
    step_fn = make_step_fn(trainer, model, opts["latents"], data, cfg)
    seen = []
    for s in range(4):
        step_fn(s)
        seen.append(float(model.norm_factor))
    assert seen[0] != 1.0 and seen[1] != seen[0]     # steps 0, 1 update the running mean
    assert seen[3] == seen[2] == seen[1]             # from step 2 on it is frozen
