"""The one diffusion objective and the one sampling loop, against the formulas they replaced.

The reference functions below are the pre-refactor implementations (SSDNeRF's own loss, the
generic ``diffusion_loss``, and the three sampler loops), kept here verbatim in their arithmetic
so that the refactored code can be checked number for number.
"""

import dataclasses

import pytest
import torch

from neural3d.diffusion import guidance as G
from neural3d.diffusion import parameterization as P
from neural3d.diffusion import samplers as S
from neural3d.diffusion.schedules import CosineSchedule, DiscreteSchedule, ShiftedSchedule

pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ pre-refactor references
def old_ssdnerf_loss(model, latents, generator=None, reduce=True):
    x0 = model.to_image(latents)
    B = x0.shape[0]
    t = model.schedule.sample_t(B, generator=generator)
    noise = torch.randn(x0.shape, generator=generator).to(x0)
    alpha, sigma = model.schedule.alpha_sigma(t.double())
    snr = (alpha ** 2 / sigma ** 2).float().to(x0.device)
    a = alpha.float().to(x0.device).view(-1, 1, 1, 1)
    s = sigma.float().to(x0.device).view(-1, 1, 1, 1)
    x_t = a * x0 + s * noise
    pred = model.unet(x_t, t.to(x0.device, torch.float32))
    kind = model.cfg.diffusion.parameterization
    tgt = P.target(kind, x0, noise, a, s)
    mse = (pred - tgt).pow(2).flatten(1).mean(1)
    native = {"eps": snr, "x0": torch.ones_like(snr), "v": snr + 1}[kind]
    per = mse * snr.pow(model.cfg.diffusion.snr_power) / native
    return per.mean() if reduce else per


def old_generic_loss(model, x0, schedule, kind, weighting, gamma, generator):
    t = schedule.sample_t(x0.shape[0], generator=generator)
    noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype)
    alpha, sigma = schedule.alpha_sigma(t.double())
    alpha, sigma = alpha.float(), sigma.float()
    a, s = alpha.view(-1, 1, 1, 1), sigma.view(-1, 1, 1, 1)
    pred = model(a * x0 + s * noise, t.float())
    mse = (pred - P.target(kind, x0, noise, a, s)).pow(2).flatten(1).mean(1)
    snr = alpha ** 2 / sigma ** 2
    if weighting == "native":
        return mse.mean()
    native = {"eps": snr, "x0": torch.ones_like(snr), "v": snr + 1}[kind]
    want = {"eps": snr, "x0": torch.ones_like(snr), "v": snr + 1,
            "min_snr": snr.clamp(max=gamma)}[weighting]
    return (mse * (want / native)).mean()


def old_sampler(name, den, x, steps, spacing="uniform", eta=0.0, generator=None, callback=None):
    ts = den.schedule.timesteps(steps, spacing).tolist()
    x0_prev = h_prev = None
    for t, s in zip(ts, ts[1:] + [0.0], strict=True):
        x0, eps = den(x, t)
        if s <= 0:
            x = x0
        else:
            a_t, s_t = den.coeffs(t, x)
            a_s, s_s = den.coeffs(s, x)
            if name == "ddim":
                var_ts = (1 - (a_t / a_s) ** 2).clamp(min=0)
                c = eta * s_s / s_t * var_ts.sqrt()
                x = a_s * x0 + (s_s ** 2 - c ** 2).clamp(min=0).sqrt() * eps
                if eta > 0:
                    x = x + c * torch.randn(x.shape, generator=generator, dtype=x.dtype)
            elif name == "ddpm":
                a_ts = a_t / a_s
                var_ts = (s_t ** 2 - a_ts ** 2 * s_s ** 2).clamp(min=0)
                mean = (a_ts * s_s ** 2 / s_t ** 2) * x + (a_s * var_ts / s_t ** 2) * x0
                std = (var_ts * s_s ** 2 / s_t ** 2).sqrt()
                x = mean + std * torch.randn(x.shape, generator=generator, dtype=x.dtype)
            else:
                h = torch.log(a_s / s_s) - torch.log(a_t / s_t)
                if x0_prev is None:
                    d = x0
                else:
                    r = h_prev / h
                    d = (1 + 1 / (2 * r)) * x0 - (1 / (2 * r)) * x0_prev
                x = (s_s / s_t) * x - a_s * torch.expm1(-h) * d
                x0_prev, h_prev = x0, h
        if callback is not None:
            callback(t, x, x0)
    return x


# ------------------------------------------------------------------ objective
@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
@pytest.mark.parametrize("schedule,omega", [("linear", 0.5), ("cosine", 0.25)])
def test_ssdnerf_loss_identical_to_its_old_formula(tmp_path, kind, schedule, omega):
    from neural3d.methods.ssdnerf import SSDNeRFModel
    from neural3d.methods.ssdnerf.config import tiny_config

    cfg = tiny_config(tmp_path / "data", tmp_path / "run")
    cfg.diffusion = dataclasses.replace(cfg.diffusion, parameterization=kind, schedule=schedule,
                                        snr_power=omega)
    torch.manual_seed(0)
    model = SSDNeRFModel(cfg)
    lat = torch.randn(3, *model.latent_shape, generator=torch.Generator().manual_seed(1))
    for reduce in (True, False):
        grads = []
        losses = []
        for fn in (old_ssdnerf_loss, SSDNeRFModel.diffusion_loss):
            x = lat.clone().requires_grad_(True)
            loss = fn(model, x, torch.Generator().manual_seed(2), reduce=reduce)
            loss.sum().backward()
            losses.append(loss.detach())
            grads.append(x.grad)
        assert torch.equal(losses[0], losses[1])
        assert torch.equal(grads[0], grads[1])
        assert losses[0].shape == (() if reduce else (3,))


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
@pytest.mark.parametrize("weighting", ["native", "eps", "v", "x0", "min_snr"])
def test_diffusion_loss_matches_old_generic_formula(kind, weighting):
    sched = DiscreteSchedule.linear(1000)
    x0 = torch.randn(16, 3, 4, 4, generator=torch.Generator().manual_seed(0))

    def model(x, t):
        return torch.tanh(x) * (1 + t.view(-1, 1, 1, 1))

    new = P.diffusion_loss(model, x0, sched, kind, weighting, 3.0,
                           generator=torch.Generator().manual_seed(5))
    old = old_generic_loss(model, x0, sched, kind, weighting, 3.0,
                           torch.Generator().manual_seed(5))
    if weighting == "native":
        assert torch.equal(new, old)
    else:  # the SNR is now taken from the float64 coefficients: float32 rounding only
        torch.testing.assert_close(new, old, rtol=1e-6, atol=0)


def test_weights_are_the_documented_x0_space_weights():
    snr = torch.tensor([0.01, 0.5, 1.0, 7.0, 300.0])
    want = {"eps": snr, "v": snr + 1, "x0": torch.ones_like(snr), "min_snr": snr.clamp(max=2.0),
            "snr_pow": snr.pow(0.3)}
    for kind in P.PARAMETERIZATIONS:
        for w, ref in want.items():
            obj = P.DiffusionObjective(None, kind, w, min_snr_gamma=2.0, snr_power=0.3)
            torch.testing.assert_close(obj.weights(snr), ref)
        native = P.DiffusionObjective(None, kind, "native").weights(snr)
        torch.testing.assert_close(native, want[kind])
    # snr_pow spans x0 (omega = 0) and eps (omega = 1)
    torch.testing.assert_close(P.DiffusionObjective(None, "v", "snr_pow", snr_power=1.0)
                               .weights(snr), snr)
    torch.testing.assert_close(P.DiffusionObjective(None, "v", "snr_pow", snr_power=0.0)
                               .weights(snr), torch.ones_like(snr))


def test_snr_pow_loss_is_the_same_in_every_parameterization():
    """An x0-space weighting does not depend on what the network predicts: a fixed x0 error
    gives the same weighted loss whether expressed as eps, x0 or v."""
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 8, generator=g), torch.randn(6, 8, generator=g)
    a = torch.rand(6, generator=g) * 0.9 + 0.05
    s = (1 - a ** 2).sqrt()
    xt = a[:, None] * x0 + s[:, None] * eps
    x0_hat = x0 + 0.1 * torch.randn(6, 8, generator=g)
    losses = []
    for kind in P.PARAMETERIZATIONS:
        obj = P.DiffusionObjective(None, kind, "snr_pow", snr_power=0.5)
        pred = P.convert(x0_hat, "x0", kind, xt, a[:, None], s[:, None])
        losses.append(obj.prediction_loss(pred, x0, eps, a, s, reduce=False))
    direct = (x0_hat - x0).pow(2).mean(1) * (a ** 2 / s ** 2).sqrt()
    for per in losses:
        torch.testing.assert_close(per, direct, rtol=1e-4, atol=1e-7)


def test_objective_rejects_bad_names_and_missing_schedule():
    with pytest.raises(ValueError, match="weighting 'snr'"):
        P.DiffusionObjective(CosineSchedule(), "v", "snr")
    with pytest.raises(ValueError, match="parameterization 'noise'"):
        P.DiffusionObjective(CosineSchedule(), "noise")
    with pytest.raises(ValueError, match="needs a schedule"):
        P.DiffusionObjective(None, "v").loss(lambda x, t: x, torch.zeros(2, 3))


def test_given_t_and_noise_are_used_and_draw_nothing():
    sched = CosineSchedule()
    obj = P.DiffusionObjective(sched, "eps", "eps")
    x0 = torch.randn(4, 2, 3, 3)
    noise = torch.randn(4, 2, 3, 3)
    t = torch.tensor([0.1, 0.4, 0.7, 0.9])
    g = torch.Generator().manual_seed(0)
    per = obj.loss(lambda x, tt: torch.zeros_like(x), x0, g, t=t, noise=noise, reduce=False)
    torch.testing.assert_close(per, noise.pow(2).flatten(1).mean(1))
    assert torch.equal(g.get_state(), torch.Generator().manual_seed(0).get_state())


# ------------------------------------------------------------------ samplers
W = torch.randn(4, 4, generator=torch.Generator().manual_seed(3)) * 0.5


def toy_model(x, t):
    return torch.tanh(torch.einsum("ij,bjhw->bihw", W, x)) * (1 + t.view(-1, 1, 1, 1)) + 0.1 * x


SCHEDULES = {"cosine": CosineSchedule(), "discrete": DiscreteSchedule.linear(1000),
             "shifted": ShiftedSchedule(CosineSchedule(), 2.0)}


@pytest.mark.parametrize("sched_name", list(SCHEDULES))
@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
@pytest.mark.parametrize("sampler,kw", [
    ("ddim", {"steps": 10}), ("ddim", {"steps": 7, "eta": 0.5}), ("ddpm", {"steps": 12}),
    ("ddpm", {"steps": 9, "spacing": "karras"}), ("dpmpp2m", {"steps": 8}),
    ("ode", {"steps": 6, "spacing": "logsnr"}),
])
def test_samplers_bit_identical_to_their_old_loops(sched_name, kind, sampler, kw):
    sched = SCHEDULES[sched_name]
    guid = [G.MeasurementGuidance(lambda x0: (x0 - 0.3).pow(2).sum() / 2, scale=0.05)]
    name = {"ode": "dpmpp2m"}.get(sampler, sampler)
    seen_new, seen_old = [], []
    g = torch.Generator().manual_seed(7)
    new = S.sample(toy_model, (6, 4, 3, 3), sched, sampler=sampler, parameterization=kind,
                   generator=g, guidance=guid, thresholding="dynamic",
                   callback=lambda t, x, x0: seen_new.append((t, x, x0)), **kw)
    after_new = torch.randn(3, generator=g)
    g = torch.Generator().manual_seed(7)
    den = S.Denoiser(toy_model, sched, kind, guidance=guid, thresholding="dynamic")
    x_T = torch.randn((6, 4, 3, 3), generator=g)
    steps = kw.get("steps")
    old = old_sampler(name, den, x_T, steps, kw.get("spacing", "uniform"), kw.get("eta", 0.0), g,
                      lambda t, x, x0: seen_old.append((t, x, x0)))
    assert torch.equal(new, old)
    assert torch.equal(after_new, torch.randn(3, generator=g))  # same random draws
    assert len(seen_new) == len(seen_old) == steps
    for (t1, x1, y1), (t2, x2, y2) in zip(seen_new, seen_old, strict=True):
        assert t1 == t2 and torch.equal(x1, x2) and torch.equal(y1, y2)


def test_sample_loop_with_a_custom_step_and_denoiser():
    """Any step function plugs into the loop; the last transition returns x0_hat."""
    sched = CosineSchedule()
    den = S.Denoiser(toy_model, sched, "v")
    calls = []

    def step(x, x0, eps, ct, cs, state):
        calls.append(0 if state is None else state)
        return S.ddim_step(x, x0, eps, ct, cs)[0], len(calls)

    x_T = torch.randn(2, 4, 3, 3, generator=torch.Generator().manual_seed(0))
    out = S.sample_loop(den, x_T, sched.timesteps(3), step)
    assert calls == [0, 1]  # two steps between grid times, then the final x0
    assert den.nfe == 3
    assert torch.equal(out, S.ddim_sample(den, schedule=sched, x_T=x_T, steps=3))
