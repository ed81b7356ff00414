"""Core diffusion: schedules, parameterisations, samplers, guidance, against closed-form oracles.

For data ``x0 ~ N(mu, s^2 I)`` the optimal denoiser is
``E[x0 | x_t] = mu + alpha s^2 / (alpha^2 s^2 + sigma^2) (x_t - alpha mu)``; with it as the model,
every sampler must reproduce mean ``mu`` and std ``s``.
"""

import math

import pytest
import torch

from neural3d.diffusion import guidance as G
from neural3d.diffusion import parameterization as P
from neural3d.diffusion import samplers as S
from neural3d.diffusion.schedules import (
    CosineSchedule,
    DiscreteSchedule,
    LinearSchedule,
    ShiftedSchedule,
    make_schedule,
)

pytestmark = pytest.mark.usefixtures("one_thread")


MU = torch.tensor([1.5, -0.7, 0.3, 2.0]).reshape(1, 4, 1, 1)
STD = torch.tensor([0.5, 1.3, 0.2, 0.8]).reshape(1, 4, 1, 1)
N = 4000
SHAPE = (N, 4, 2, 2)


def oracle(schedule, kind, mu=MU, std=STD):
    def model(x, t):
        assert torch.all(t == t[0])  # samplers give every sample the same time
        a, s = schedule.alpha_sigma(t[:1].double())
        a, s = float(a), float(s)
        x0 = mu + a * std**2 / (a**2 * std**2 + s**2) * (x - a * mu)
        return P.convert(x0, "x0", kind, x, a, s)
    return model


def check_moments(x, mu=MU, std=STD, rel_std_tol=0.05):
    flat = x.transpose(0, 1).reshape(4, -1)
    n = flat.shape[1]
    m, sd = flat.mean(1), flat.std(1)
    mu_, std_ = mu.flatten(), std.flatten()
    assert torch.all((m - mu_).abs() < 5 * std_ / math.sqrt(n) + 1e-3), (m, mu_)
    assert torch.all((sd / std_ - 1).abs() < rel_std_tol), (sd, std_)


SCHEDULES = {
    "cosine": CosineSchedule(),
    "linear_discrete": DiscreteSchedule.linear(1000),
    "shifted": ShiftedSchedule(CosineSchedule(), 2.0),
}


@pytest.mark.parametrize("sched_name", list(SCHEDULES))
def test_schedule_properties(sched_name):
    sched = SCHEDULES[sched_name]
    t = torch.linspace(0.001, 1, 200, dtype=torch.float64)
    lam = sched.log_snr(t)
    assert torch.all(lam[1:] <= lam[:-1] + 1e-9)
    a, s = sched.alpha_sigma(t)
    torch.testing.assert_close(a**2 + s**2, torch.ones_like(a))
    assert float(sched.alpha_sigma(1.0)[0]) < 0.01
    inv = sched.t_from_log_snr(lam)
    torch.testing.assert_close(sched.log_snr(inv), lam, atol=1e-5, rtol=1e-5)


def test_discrete_linear_matches_ddpm_table_and_continuous():
    sched = DiscreteSchedule.linear(1000)
    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    a, _ = sched.alpha_sigma(torch.arange(1, 1001, dtype=torch.float64) / 1000)
    torch.testing.assert_close(a**2, abar)
    cont = LinearSchedule()
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    assert torch.allclose(cont.log_snr(t), sched.log_snr(t), atol=0.05)
    ts = sched.timesteps(50)
    assert len(ts) == 50 and float(ts[0]) == 1.0 and len(set((ts * 1000).round().tolist())) == 50
    for sch in (sched, DiscreteSchedule.cosine(1000)):
        for spacing in ("uniform", "logsnr", "karras"):
            for steps in (10, 20, 1000):
                n = (sch.timesteps(steps, spacing) * 1000).round()
                assert len(n) == steps and float(n[0]) == 1000 and float(n[-1]) >= 1
                assert bool((n[1:] < n[:-1]).all()), (spacing, steps)


def test_shifted_schedule_is_snr_over_scale_squared():
    base = CosineSchedule()
    sh = ShiftedSchedule(base, 4.0)
    t = torch.tensor([0.2, 0.5, 0.8])
    torch.testing.assert_close(sh.snr(t), base.snr(t) / 16)
    assert isinstance(make_schedule("linear", 100), DiscreteSchedule)


def test_parameterization_conversions_exact():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(5, 3, generator=g), torch.randn(5, 3, generator=g)
    a = torch.rand(5, 1, generator=g) * 0.9 + 0.05
    s = (1 - a**2).sqrt()
    xt = a * x0 + s * eps
    preds = {k: P.target(k, x0, eps, a, s) for k in P.PARAMETERIZATIONS}
    for src in P.PARAMETERIZATIONS:
        for dst in P.PARAMETERIZATIONS:
            torch.testing.assert_close(P.convert(preds[src], src, dst, xt, a, s), preds[dst])


def test_loss_weighting_relations():
    snr = torch.tensor([0.1, 1.0, 10.0])

    def factor(kind, weighting, gamma=5.0):  # applied to the native MSE
        obj = P.DiffusionObjective(None, kind, weighting, gamma)
        return obj.weights(snr) / P.native_weight(snr, kind)

    # eps-MSE expressed for an x0-predicting network must weight by snr, v-MSE by snr + 1
    torch.testing.assert_close(factor("x0", "eps"), snr)
    torch.testing.assert_close(factor("x0", "v"), snr + 1)
    torch.testing.assert_close(factor("eps", "min_snr", 5.0), snr.clamp(max=5) / snr)
    # numerically: an error in eps-space maps to the documented errors in x0/v space
    x0, eps = torch.zeros(1, 8), torch.randn(1, 8)
    a, s = torch.tensor([0.6]), torch.tensor([0.8])
    d = torch.randn(1, 8) * 0.1
    xt = a * x0 + s * eps
    le = P.DiffusionObjective(None, "eps", "native").prediction_loss(eps + d, x0, eps, a, s)
    for kind in ("x0", "v"):
        pred = P.convert(eps + d, "eps", kind, xt, a, s)
        lk = P.DiffusionObjective(None, kind, "eps").prediction_loss(pred, x0, eps, a, s)
        torch.testing.assert_close(lk, le, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("kind", ["eps", "x0", "v"])
@pytest.mark.parametrize("sampler,steps,kw", [
    ("ddpm", 1000, {}), ("ddim", 200, {}), ("ddim", 250, {"eta": 1.0}),
    ("dpmpp2m", 20, {"spacing": "logsnr"}), ("dpmpp2m", 40, {"spacing": "uniform"}),
])
def test_oracle_samplers_match_gaussian(kind, sampler, steps, kw):
    sched = DiscreteSchedule.linear(1000) if sampler == "ddpm" else CosineSchedule()
    g = torch.Generator().manual_seed(1)
    shape = (1500, 4, 2, 2) if sampler == "ddpm" else SHAPE  # 1000 steps: fewer samples
    x = S.sample(oracle(sched, kind), shape, sched, sampler=sampler, steps=steps,
                 parameterization=kind, generator=g, **kw)
    check_moments(x)


@pytest.mark.parametrize("sched_name", ["linear_discrete", "shifted"])
def test_oracle_ode_other_schedules(sched_name):
    sched = SCHEDULES[sched_name]
    g = torch.Generator().manual_seed(2)
    for sampler, steps, kw in (("ddim", 200, {}), ("dpmpp2m", 25, {"spacing": "logsnr"})):
        x = S.sample(oracle(sched, "v"), SHAPE, sched, sampler=sampler, steps=steps,
                     parameterization="v", generator=g, **kw)
        check_moments(x)


def test_oracle_test_detects_wrong_model():
    sched = CosineSchedule()
    wrong = oracle(sched, "eps", mu=MU + 0.2, std=STD)
    x = S.sample(wrong, SHAPE, sched, sampler="dpmpp2m", steps=20, parameterization="eps",
                 generator=torch.Generator().manual_seed(3))
    with pytest.raises(AssertionError):
        check_moments(x)


def test_ddim_deterministic_and_invertible():
    sched = CosineSchedule()
    model = oracle(sched, "eps")
    xT = torch.randn(16, 4, 2, 2, generator=torch.Generator().manual_seed(4))
    a = S.ddim_sample(model, schedule=sched, x_T=xT, steps=50)
    b = S.ddim_sample(model, schedule=sched, x_T=xT, steps=50)
    assert torch.equal(a, b)
    z = S.ddim_invert(model, a, sched, steps=50)  # plain inversion: first-order accurate
    assert (S.ddim_sample(model, schedule=sched, x_T=z, steps=50) - a).abs().max() < 0.3
    z = S.ddim_invert(model, a, sched, steps=50, fixed_point_iters=3)
    assert (z - xT).abs().max() < 1e-2
    regen = S.ddim_sample(model, schedule=sched, x_T=z, steps=50)
    assert (regen - a).abs().max() < 2e-3


def test_cfg_convention_and_parameterization_invariance():
    def model(x, t, y):
        return x * 0 + y.float().reshape(-1, 1)

    x, t = torch.zeros(3, 2), torch.full((3,), 0.5)
    cfg = G.classifier_free_guidance(model, 3.0, {"y": torch.zeros(3, dtype=torch.long)})
    out = cfg(x, t, y=torch.ones(3, dtype=torch.long))
    torch.testing.assert_close(out, torch.full((3, 2), 3.0))  # 0 + 3 * (1 - 0)
    assert torch.equal(G.classifier_free_guidance(model, 1.0, {"y": torch.zeros(3)})(
        x, t, y=torch.ones(3)), torch.ones(3, 2))
    # guiding eps then converting == converting both branches then guiding
    a, s = torch.tensor(0.6), torch.tensor(0.8)
    xt = torch.randn(4, 3)
    c, u = torch.randn(4, 3), torch.randn(4, 3)
    g_eps = u + 2.5 * (c - u)
    cv, uv = P.to_v(c, "eps", xt, a, s), P.to_v(u, "eps", xt, a, s)
    torch.testing.assert_close(P.to_v(g_eps, "eps", xt, a, s), uv + 2.5 * (cv - uv))


def test_measurement_guidance_pulls_samples_to_measurement():
    sched = CosineSchedule()
    model = oracle(sched, "eps")
    target = torch.full((1, 4, 2, 2), 0.9)
    g = torch.Generator().manual_seed(5)
    plain = S.sample(model, (256, 4, 2, 2), sched, sampler="ddim", steps=30,
                     generator=torch.Generator().manual_seed(5))
    for wrt, kw, gain in (("x0", {"snr_weighted": False, "scale": 0.3}, 0.5),
                          ("xt", {"scale": 1.0}, 0.5),
                          ("x0", {"scale": 0.3, "t_max": 0.5}, 0.9)):  # snr-weighted, late steps
        mg = G.MeasurementGuidance(lambda x0: 0.5 * (x0 - target).pow(2).sum(), wrt=wrt, **kw)
        guided = S.sample(model, (256, 4, 2, 2), sched, sampler="ddim", steps=30,
                          generator=torch.Generator().manual_seed(5), guidance=[mg])
        assert (guided - target).pow(2).mean() < gain * (plain - target).pow(2).mean(), wrt
    del g


def test_measurement_guidance_x0_forms():
    """wrt='x0' with loss |x0 - I|^2/2: snr_weighted gives eps + gamma * sigma/alpha * (x0_hat - I);
    the plain form is NerfDiff's NGD blend x0_hat <- (1 - gamma) x0_hat + gamma I."""
    img = torch.randn(2, 3)
    x0, eps = torch.randn(2, 3), torch.randn(2, 3)
    a, s = torch.tensor(0.6), torch.tensor(0.8)
    mg = G.MeasurementGuidance(lambda x0: 0.5 * (x0 - img).pow(2).sum(), scale=0.7)
    out = mg.apply(None, None, x0, eps, a, s, {})
    torch.testing.assert_close(out, eps + 0.7 * s / a * (x0 - img))
    ngd = G.MeasurementGuidance(lambda x0: 0.5 * (x0 - img).pow(2).sum(), scale=0.7,
                                snr_weighted=False)
    xt = a * x0 + s * eps
    eps_g = ngd.apply(xt, None, x0, eps, a, s, {})
    torch.testing.assert_close((xt - s * eps_g) / a, 0.3 * x0 + 0.7 * img)


def test_classifier_guidance_and_thresholding():
    sched = CosineSchedule()
    model = oracle(sched, "eps")
    cg = G.ClassifierGuidance(lambda x, t: torch.ones_like(x), scale=2.0)
    base = S.sample(model, (512, 4, 2, 2), sched, steps=20,
                    generator=torch.Generator().manual_seed(6))
    up = S.sample(model, (512, 4, 2, 2), sched, steps=20, guidance=[cg],
                  generator=torch.Generator().manual_seed(6))
    assert (up.mean() - base.mean()) > 0.1
    x = torch.tensor([[3.0, -0.5, 0.2, 0.1]])
    assert G.threshold_x0(x, "clip").max() == 1.0
    d = G.threshold_x0(x, "dynamic", percentile=1.0)
    torch.testing.assert_close(d, x / 3.0)
    clipped = S.sample(model, (64, 4, 2, 2), sched, steps=10, thresholding="clip",
                       generator=torch.Generator().manual_seed(0))
    assert clipped.abs().max() <= 1.0 + 1e-5


def test_diffusion_loss_runs_and_is_zero_for_oracle_x0_on_point_mass():
    sched = CosineSchedule()
    x0 = torch.full((8, 4, 2, 2), 0.3)

    def perfect(x, t):  # point mass at 0.3 -> x0_hat is exact
        return torch.full_like(x, 0.3)

    loss = P.diffusion_loss(perfect, x0, sched, parameterization="x0", weighting="min_snr",
                            generator=torch.Generator().manual_seed(0))
    assert float(loss) < 1e-10
