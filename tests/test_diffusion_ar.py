"""Kaleido (autoregressive latents) and DART (denoising autoregressive transformer)."""

import pytest
import torch
from torch import nn

from neural3d.diffusion.dart import (
    DARTLevels,
    DARTransformer,
    KVCache,
    attention_mask,
    dart_loss,
    dart_noise,
    dart_sample,
)
from neural3d.diffusion.guidance import classifier_free_guidance
from neural3d.diffusion.kaleido import (
    ARPrior,
    Kaleido,
    KMeansExtractor,
    LatentConditioned,
    LatentEmbedding,
)
from neural3d.diffusion.parameterization import DiffusionObjective
from neural3d.diffusion.samplers import sample
from neural3d.diffusion.schedules import make_schedule
from neural3d.diffusion.unet import CondEmbedding, UNet, drop_labels

pytestmark = pytest.mark.usefixtures("one_thread")


def randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-zero weights everywhere (adaLN-Zero nets start as the identity / zero output)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


def teacher_forced(model, xs, y, cfg):
    """One forward pass over the steps ``xs`` a sampler fed in, guided as the sampler guides."""
    with torch.no_grad():
        full = model(xs, y)
        if cfg != 1.0:
            u = model(xs, None)
            full = u + cfg * (full - u)
    return full


def tiny_dart(history_mask="block_causal", steps=5):
    return randomise(DARTransformer(3, 8, patch=4, dim=32, depth=2, heads=4, steps=steps,
                                    num_classes=2, history_mask=history_mask)).eval()


# ---------------------------------------------------------------------------- DART
def test_levels_match_the_reference_schedule():
    sched = make_schedule("cosine", 1000)
    lv = DARTLevels.from_schedule(sched, 8)
    ref = sched.snr(sched.timesteps(8))
    assert torch.allclose(lv.snr_cum, ref, rtol=1e-12)
    per_step = lv.gamma / (1 - lv.gamma)
    assert torch.allclose(torch.cumsum(per_step, 0), ref, rtol=1e-9)
    assert bool(((lv.gamma > 0) & (lv.gamma < 1)).all())
    a, s = lv.alpha_sigma_cum()
    assert torch.allclose(a ** 2 / s ** 2, ref, rtol=1e-9)


def test_noise_of_different_steps_is_independent():
    lv = DARTLevels.from_schedule(make_schedule("cosine", 1000), 6)
    g = torch.Generator().manual_seed(0)
    x0 = torch.rand(2000, 1, 2, 2, generator=g) * 2 - 1
    x, eps = dart_noise(x0, lv, torch.Generator().manual_seed(1))
    gam = lv.gamma.float().reshape(1, -1, 1, 1, 1)
    assert torch.allclose(x, gam.sqrt() * x0[:, None] + (1 - gam).sqrt() * eps, atol=1e-6)
    # the noise each step carries, recovered from the noisy steps themselves
    noise = ((x - gam.sqrt() * x0[:, None]) / (1 - gam).sqrt()).transpose(0, 1).flatten(1)
    n = noise.shape[1]                        # 8000 draws per step
    corr = torch.corrcoef(noise.double())
    off = corr[~torch.eye(len(corr), dtype=torch.bool)]
    assert off.abs().max() < 4.5 / n ** 0.5   # independent: |r| ~ N(0, 1/n)
    assert torch.allclose(noise.var(1), torch.ones(len(noise)), atol=0.06)
    # a fresh generator with the same seed repeats the draw
    _, eps2 = dart_noise(x0, lv, torch.Generator().manual_seed(1))
    assert torch.equal(eps, eps2)


def test_block_causal_mask_definition():
    k = 3
    m = attention_mask(4, 0, k)
    for i in range(12):
        for j in range(12):
            assert bool(m[i, j]) == (j // k <= i // k)
    d = attention_mask(4, 0, k, "block_diagonal")
    assert torch.equal(d, torch.block_diag(*[torch.ones(k, k, dtype=torch.bool)] * 4))
    # the query rows of steps 2..3 against keys 0..3 (what a cached call uses)
    assert torch.equal(attention_mask(2, 2, k), m[6:])
    with pytest.raises(ValueError, match="history_mask"):
        attention_mask(2, 0, k, "causal")


@pytest.mark.parametrize("history_mask", ["block_causal", "block_diagonal"])
def test_no_step_sees_a_cleaner_step(history_mask):
    model = tiny_dart(history_mask)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 3, 8, 8, generator=g)
    y = torch.tensor([0, 1])
    base = model(x, y)
    for j in range(5):
        xp = x.clone()
        xp[:, j] += torch.randn(2, 3, 8, 8, generator=g)
        out = model(xp, y)
        changed = [(out[:, i] - base[:, i]).abs().max().item() > 1e-4 for i in range(5)]
        assert not any(changed[:j]), f"a step noisier than {j} saw step {j}"
        if history_mask == "block_causal":
            assert all(changed[j:]), f"steps after {j} must see it"
        else:
            assert changed == [i == j for i in range(5)]


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_kv_cached_sampling_equals_a_full_forward_pass(cfg):
    model = tiny_dart()
    lv = DARTLevels.from_schedule(make_schedule("cosine", 1000), 5)
    y = torch.tensor([0, 1, 1])
    out, xs, x0s = dart_sample(model, 3, lv, y, cfg, torch.Generator().manual_seed(2),
                               clip=None, trajectory=True)
    assert xs.shape == x0s.shape == (3, 5, 3, 8, 8)
    assert (teacher_forced(model, xs, y, cfg) - x0s).abs().max() < 1e-5
    assert torch.equal(out, x0s[:, -1])
    # the steps fed in are the non-Markovian re-noising of the previous estimates
    g = lv.gamma[1:].float().reshape(1, -1, 1, 1, 1)
    resid = (xs[:, 1:] - g.sqrt() * x0s[:, :-1]) / (1 - g).sqrt()
    assert resid.abs().max() < 6 and 0.8 < resid.std() < 1.2


def test_kv_cache_splits_like_the_full_sequence():
    model = tiny_dart()
    x = torch.randn(2, 5, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    cache = KVCache()
    with torch.no_grad():
        parts = [model(x[:, :2], None, cache), model(x[:, 2:], None, cache)]
        full = model(x, None)
    assert cache.tokens == 5 * model.tokens
    assert (torch.cat(parts, 1) - full).abs().max() < 1e-5
    with pytest.raises(ValueError, match="exceed"):
        model(x[:, :1], None, cache)


def tiny_dart_ar(steps=3):
    return randomise(DARTransformer(3, 8, patch=4, dim=32, depth=2, heads=4, steps=steps,
                                    num_classes=2, token_ar=True)).eval()


def test_dart_ar_is_causal_over_tokens():
    """A token's x0 depends on earlier tokens only (its own noisy token included: not)."""
    model = tiny_dart_ar()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 3, 8, 8, generator=g)
    y = torch.tensor([0, 1])
    tokens = model.patchify(x).flatten(1, 2)                     # [2, 12, 48]
    with torch.no_grad():
        base = model.patchify(model(x, y)).flatten(1, 2)
        for j in (0, 5, 11):
            tp = tokens.clone()
            tp[:, j] += torch.randn(2, tokens.shape[-1], generator=g)
            xp = model.unpatchify(tp.reshape(2, 3, model.tokens, -1))
            out = model.patchify(model(xp, y)).flatten(1, 2)
            changed = [(out[:, i] - base[:, i]).abs().max().item() > 1e-5 for i in range(12)]
            assert changed == [i > j for i in range(12)], j
    with pytest.raises(ValueError, match="block_causal"):
        DARTransformer(3, 8, patch=4, dim=32, depth=1, heads=4, steps=3,
                       history_mask="block_diagonal", token_ar=True)


@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_dart_ar_token_by_token_sampling_equals_a_full_forward_pass(cfg):
    model = tiny_dart_ar()
    lv = DARTLevels.from_schedule(make_schedule("cosine", 1000), 3)
    y = torch.tensor([0, 1])
    out, xs, x0s = dart_sample(model, 2, lv, y, cfg, torch.Generator().manual_seed(1),
                               clip=None, trajectory=True)
    assert out.shape == (2, 3, 8, 8) and xs.shape == x0s.shape == (2, 3, 3, 8, 8)
    assert (teacher_forced(model, xs, y, cfg) - x0s).abs().max() < 1e-5
    assert torch.equal(out, x0s[:, -1])
    lv_loss = dart_loss(model.train(), torch.rand(2, 3, 8, 8) * 2 - 1, lv,
                        DiffusionObjective(None, "x0", "min_snr"), y)[0]
    lv_loss.backward()
    assert model.start.grad is not None and model.start.grad.abs().sum() > 0


def test_dart_loss_is_the_clamped_snr_weighted_x0_mse():
    lv = DARTLevels.from_schedule(make_schedule("cosine", 1000), 6)
    model = DARTransformer(3, 8, patch=4, dim=16, depth=1, heads=2, steps=6, num_classes=2)
    x0 = torch.rand(4, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    obj = DiffusionObjective(None, "x0", "min_snr", min_snr_gamma=5.0)
    loss, per = dart_loss(model, x0, lv, obj, torch.tensor([0, 1, 0, 1]))
    # a new network predicts exactly 0: step k costs min(snr_k, 5) * mean(x0^2)
    want = lv.snr_cum.clamp(max=5.0).float() * x0.pow(2).mean()
    assert torch.allclose(per, want, rtol=1e-5)
    assert torch.allclose(loss, want.mean(), rtol=1e-5)
    loss.backward()
    assert model.final.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="x0"):
        dart_loss(model, x0, lv, DiffusionObjective(None, "v"))


# ---------------------------------------------------------------------------- Kaleido
def test_extractor_cells_fit_and_checkpoint():
    # quadrant colours: cell l of image b is constant (b + l) / 10 in every channel
    x = torch.zeros(5, 3, 16, 16)
    for b in range(5):
        for l, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
            x[b, :, r * 8:(r + 1) * 8, c * 8:(c + 1) * 8] = (b + l) / 10
    ext = KMeansExtractor(clusters=4, channels=3, pool=4, cells=2)
    f = ext.features(x)
    assert f.shape == (5, 4, 12)
    assert torch.allclose(f[2, 3], torch.full((12,), 0.5))
    with pytest.raises(RuntimeError, match="fitted"):
        ext(x)
    ext.fit(x, seed=0)
    z = ext(x)
    assert z.shape == (5, 4) and z.dtype == torch.long and int(z.max()) < 4
    same = KMeansExtractor(4, 3, 4, 2)
    same.fit(x, seed=0)
    assert torch.equal(same.centroids, ext.centroids)          # deterministic
    loaded = KMeansExtractor(4, 3, 4, 2)
    loaded.load_state_dict(ext.state_dict())                     # stored with the model
    assert torch.equal(loaded(x), z)
    # equal colours get equal ids
    values = (torch.arange(5)[:, None] + torch.arange(4)[None]).flatten()
    ids = z.flatten()
    for v in values.unique():
        assert ids[values == v].unique().numel() == 1


def test_prior_is_causal_and_samples_valid_ids():
    prior = randomise(ARPrior(clusters=5, length=4, num_classes=2, dim=16, depth=2, heads=2))
    z = torch.randint(5, (3, 4), generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2])
    logits = prior.logits(y, z[:, :-1])
    assert logits.shape == (3, 4, 5)
    z2 = z.clone()
    z2[:, 1] = (z2[:, 1] + 1) % 5
    logits2 = prior.logits(y, z2[:, :-1])
    assert torch.allclose(logits[:, :2], logits2[:, :2], atol=1e-6)   # z_1, z_2 ignore z_2
    assert (logits[:, 2:] - logits2[:, 2:]).abs().max() > 1e-4
    loss = prior.loss(z, y)
    loss.backward()
    assert torch.isfinite(loss) and prior.token.weight.grad.abs().sum() > 0
    s = prior.sample(y, torch.Generator().manual_seed(1))
    assert s.shape == (3, 4) and int(s.min()) >= 0 and int(s.max()) < 5
    assert torch.equal(s, prior.sample(y, torch.Generator().manual_seed(1)))


class Spy(nn.Module):
    """Records the (y, z) of every call; predicts zeros."""

    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.calls = []

    def forward(self, x, t, y=None, z=None):
        self.calls.append((y.clone(), z.clone()))
        return x * self.w


def test_cfg_drops_class_and_latent_together():
    spy = Spy()
    ext = KMeansExtractor(3, 2, pool=0)
    x = torch.randn(64, 2, generator=torch.Generator().manual_seed(0))
    ext.fit(x)
    kal = Kaleido(spy, ext, ARPrior(3, 1, 2, dim=8, depth=1, heads=2),
                  DiffusionObjective(make_schedule("cosine"), "eps"), null_label=2,
                  cond_drop=0.5)
    y = torch.randint(2, (64,))
    loss, parts = kal(x, y, torch.Generator().manual_seed(1))
    assert set(parts) == {"diffusion", "prior"}
    yd, zd = spy.calls[-1]
    dropped = yd == 2
    assert 10 < int(dropped.sum()) < 54
    assert torch.equal(zd[:, 0] == 3, dropped)                  # z null exactly where y is
    assert torch.equal(zd[~dropped, 0], ext(x)[~dropped, 0])
    spy.calls.clear()
    kal.sample((4, 2), torch.tensor([0, 1, 0, 1]), cfg_scale=3.0,
               generator=torch.Generator().manual_seed(2), sampler="ddim", steps=2)
    y_both, z_both = spy.calls[0]                                 # [cond; uncond] batch
    assert y_both[:4].tolist() == [0, 1, 0, 1] and (y_both[4:] == 2).all()
    assert (z_both[:4] < 3).all() and (z_both[4:] == 3).all()


def test_extractor_decode_inverts_the_ids():
    """decode(z) is the centroid image: the extractor reads z back from it, its cell features
    are the centroids, and null ids give zeros."""
    ext = KMeansExtractor(clusters=6, channels=3, pool=4, cells=2)
    ext.fit(torch.randn(40, 3, 16, 16), seed=0)
    z = torch.randint(6, (7, 4), generator=torch.Generator().manual_seed(1))
    picture = ext.decode(z)
    assert picture.shape == (7, 3, 4, 4)
    assert torch.equal(ext(picture), z)
    assert torch.allclose(ext.features(picture), ext.centroids[z])
    assert torch.equal(ext.decode(torch.full((2, 4), 6)), torch.zeros(2, 3, 4, 4))
    with pytest.raises(ValueError, match="image extractor"):
        KMeansExtractor(2, 2, pool=0).decode(z)


def latent_image_extractor() -> KMeansExtractor:
    ext = KMeansExtractor(clusters=4, channels=3, pool=4, cells=2)
    ext.fit(torch.randn(20, 3, 8, 8), seed=0)
    return ext


def test_latent_image_channels():
    """With an image extractor the U-Net reads z's centroid picture (nearest-upsampled) and a
    ones channel; the null latent reads zeros; a U-Net without those channels is refused."""
    ext = latent_image_extractor()
    unet = UNet(3, channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
                resolution=8, num_classes=2, cond_channels=4)
    net = LatentConditioned(unet, clusters=4, length=4, image_of=ext)
    x = torch.randn(2, 3, 8, 8)
    z = torch.tensor([[0, 1, 2, 3], [3, 4, 4, 4]])          # the second is null
    cond = net.latent_image(z, x)
    assert cond.shape == (2, 4, 8, 8)
    assert torch.equal(cond[0, :3], ext.decode(z[:1])[0].repeat_interleave(2, -1)
                       .repeat_interleave(2, -2))
    assert (cond[0, 3] == 1).all() and (cond[1] == 0).all()
    assert (net.latent_image(None, x) == 0).all()
    plain = UNet(3, channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
                 resolution=8, num_classes=2)
    with pytest.raises(ValueError, match="cond channels"):
        LatentConditioned(plain, clusters=4, length=4, image_of=ext)


def test_latent_conditioned_unet_uses_z():
    unet = UNet(3, channels=8, channel_mult=(1, 2), num_res_blocks=1, attention_resolutions=(),
                resolution=8, num_classes=2)
    net = randomise(LatentConditioned(unet, clusters=4, length=4))
    x, t = torch.randn(2, 3, 8, 8), torch.tensor([0.3, 0.7])
    z = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    a, b = net(x, t, torch.tensor([0, 1]), z), net(x, t, torch.tensor([0, 1]), None)
    assert a.shape == (2, 3, 8, 8) and (a - b).abs().max() > 1e-4
    null = LatentEmbedding(4, 4, 5)
    assert torch.equal(null(None, 2), null(null.null(2), 2))


@pytest.mark.parametrize("latent_image", [False, True])
def test_latent_conditioning_starts_as_the_unet_without_z(latent_image):
    """The latent table (and the latent image's input weights) start at zero: before training,
    the z-conditioned denoiser's output is the plain U-Net's for any z, and z still gets a
    gradient (so it can learn to use it)."""
    unet = randomise(UNet(3, channels=8, channel_mult=(1, 2), num_res_blocks=1,
                          attention_resolutions=(), resolution=8, num_classes=2,
                          cond_channels=4 if latent_image else 0))
    net = LatentConditioned(unet, clusters=4, length=4,
                            image_of=latent_image_extractor() if latent_image else None)
    x, t, y = torch.randn(2, 3, 8, 8), torch.tensor([0.3, 0.7]), torch.tensor([0, 1])
    z = torch.tensor([[0, 1, 2, 3], [3, 2, 1, 0]])
    out = net(x, t, y, z)
    assert torch.equal(out, unet(x, t, y))
    out.square().sum().backward()
    assert net.latent.table.weight.grad.abs().sum() > 0
    if latent_image:
        assert unet.in_conv.weight.grad[:, 3:].abs().sum() > 0


# ---------------------------------------------------------------- the 2-D unit test
MODES = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
MINORITY = 0.2


def two_mode_data(n: int, g: torch.Generator):
    """Class c: mode c with probability 0.8, the other class's mode (its minority) with 0.2."""
    y = torch.randint(2, (n,), generator=g)
    minority = torch.rand(n, generator=g) < MINORITY
    mode = torch.where(minority, 1 - y, y)
    return MODES[mode] + 0.15 * torch.randn(n, 2, generator=g), y


class PointDenoiser(nn.Module):
    """An MLP on 2-D points conditioned on time, class and (optionally) the latent."""

    def __init__(self, width: int = 128, clusters: int = 2):
        super().__init__()
        self.embed = CondEmbedding(32, width, 2)
        self.latent = LatentEmbedding(clusters, 1, width)
        self.inp = nn.Linear(2, width)
        self.body = nn.Sequential(nn.SiLU(), nn.Linear(width, width), nn.SiLU(),
                                  nn.Linear(width, width), nn.SiLU(), nn.Linear(width, 2))

    def forward(self, x, t, y=None, z=None):
        return self.body(self.inp(x) + self.embed(t, y) + self.latent(z, len(x)))


def minority_fraction(x: torch.Tensor, y: torch.Tensor) -> float:
    return (torch.cdist(x, MODES).argmin(1) != y).float().mean().item()


def test_kaleido_keeps_the_minority_mode_under_strong_guidance():
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    sched = make_schedule("cosine")
    obj = DiffusionObjective(sched, "v")
    data, labels = two_mode_data(4096, g)
    baseline = PointDenoiser()
    kaleido = Kaleido(PointDenoiser(), KMeansExtractor(2, 2, pool=0),
                      ARPrior(2, 1, 2, dim=16, depth=1, heads=2), obj, null_label=2,
                      cond_drop=0.2)
    kaleido.fit(data)
    for model in (baseline, kaleido):
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(1000):
            idx = torch.randint(len(data), (256,), generator=g)
            x, y = data[idx], labels[idx]
            if model is baseline:
                loss = obj.loss(baseline, x, generator=g, y=drop_labels(y, 0.2, 2, g))
            else:
                loss, _ = kaleido(x, y, g)
            opt.zero_grad()
            loss.backward()
            opt.step()
    n, w = 2000, 5.0
    y = torch.arange(n) % 2
    guided = classifier_free_guidance(baseline, w, {"y": torch.full_like(y, 2)})
    xb = sample(guided, (n, 2), sched, sampler="ddim", steps=25, model_kwargs={"y": y},
                generator=torch.Generator().manual_seed(1))
    xk = kaleido.sample((n, 2), y, w, generator=torch.Generator().manual_seed(1),
                        sampler="ddim", steps=25)
    assert minority_fraction(xb, y) < 0.1                       # the baseline collapses
    assert abs(minority_fraction(xk, y) - MINORITY) < 0.1       # Kaleido keeps the mode
