"""Trainer with several named modules in manual mode: a 1-D GAN, exact resume with two
optimisers, the NaN guard, per-module EMA and per-optimiser clipping."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from neural3d.train import NonFiniteLossError, TrainConfig, Trainer, load_checkpoint

MODES, STD = (-2.0, 2.0), 0.25


def _mlp(n_in: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, hidden), nn.LeakyReLU(0.2), nn.Linear(hidden, hidden),
                         nn.LeakyReLU(0.2), nn.Linear(hidden, 1))


def _gan(out_dir, steps, seed=0, hidden=64, batch=128, lr=2e-3, ema=None, ckpt_every=0,
         nan_at=None, sched=False):
    """``(trainer, step_fn)`` of a GAN learning the two-mode mixture (non-saturating loss)."""
    torch.manual_seed(seed)  # module init identical in every run
    G, D = _mlp(2, hidden), _mlp(1, hidden)
    opts = {"G": torch.optim.Adam(G.parameters(), lr, betas=(0.5, 0.999)),
            "D": torch.optim.Adam(D.parameters(), lr, betas=(0.5, 0.999))}
    scheduler = {"D": torch.optim.lr_scheduler.StepLR(opts["D"], 3, 0.8)} if sched else None
    cfg = TrainConfig(steps=steps, seed=seed, out_dir=str(out_dir), progress=False,
                      tensorboard=False, log_every=1, ckpt_every=ckpt_every, grad_clip=10.0)
    trainer = Trainer({"G": G, "D": D}, opts, cfg, scheduler=scheduler, ema=ema, manual=True)
    g = trainer.generator("data")

    def step_fn(step):
        sign = torch.randint(0, 2, (batch, 1), generator=g) * 2.0 - 1.0
        real = MODES[1] * sign + STD * torch.randn(batch, 1, generator=g)
        z = torch.randn(batch, 2)  # the global RNG, also checkpointed
        Gm, Dm = trainer.modules["G"], trainer.modules["D"]
        fake = Gm(z)
        loss_d = F.softplus(-Dm(real)).mean() + F.softplus(Dm(fake.detach())).mean()
        trainer.backward_step(loss_d, "D")
        loss_g = F.softplus(-Dm(fake)).mean()
        if step == nan_at:
            loss_g = loss_g * float("nan")
        trainer.backward_step(loss_g, "G")
        return {"loss": (loss_d + loss_g).detach(), "loss_d": loss_d.detach(),
                "loss_g": loss_g.detach()}

    return trainer, step_fn


def test_gan_learns_two_modes(tmp_path):
    trainer, step_fn = _gan(tmp_path, steps=1500)
    trainer.fit(step_fn)
    with torch.no_grad():
        x = trainer.raw["G"](torch.randn(4000, 2, generator=torch.Generator().manual_seed(1)))
    share = [float(((x - m).abs() < 3 * STD).float().mean()) for m in MODES]
    assert all(0.25 <= s <= 0.75 for s in share), share   # no mode collapse
    assert sum(share) >= 0.8, share                        # samples concentrate on the modes
    # for contrast, the untrained generator does not
    torch.manual_seed(0)
    with torch.no_grad():
        x0 = _mlp(2, 64)(torch.randn(4000, 2))
    assert sum(float(((x0 - m).abs() < 3 * STD).float().mean()) for m in MODES) < 0.2


def test_exact_resume_two_optimisers(tmp_path):
    N, k = 12, 5
    full, fn = _gan(tmp_path / "full", N, ema={"G": 0.9}, sched=True)
    full.maybe_resume()
    straight = [h["loss"] for h in full.fit(fn)]

    first, fn1 = _gan(tmp_path / "split", k, ema={"G": 0.9}, sched=True)
    first.fit(fn1)
    del first
    torch.manual_seed(999)  # disturb the global RNG: resume must restore it
    second, fn2 = _gan(tmp_path / "split", N, ema={"G": 0.9}, sched=True)
    assert second.maybe_resume() and second.step == k
    resumed = [h["loss"] for h in second.fit(fn2)]
    assert len(resumed) == N
    assert resumed == straight  # exactly, not approximately
    for a, b in ((full.raw["G"], second.raw["G"]), (full.raw["D"], second.raw["D"]),
                 (full.emas["G"].module, second.emas["G"].module)):
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True):
            assert torch.equal(p, q)
    assert full.schedulers["D"].get_last_lr() == second.schedulers["D"].get_last_lr()
    assert second.schedulers["D"].last_epoch == N  # stepped once per trainer step
    ckpt = load_checkpoint(tmp_path / "split" / "checkpoints" / "last.pt")
    assert ckpt["format"] == "neural3d-trainer-2" and ckpt["step"] == N
    assert set(ckpt["modules"]) == {"G", "D"} and set(ckpt["optimizers"]) == {"G", "D"}
    assert ckpt["model"] is None and ckpt["ema"] is None  # no single model here


def test_nan_guard_manual_mode_keeps_last_good_checkpoint(tmp_path):
    trainer, step_fn = _gan(tmp_path, steps=10, ckpt_every=2, nan_at=5)
    path = tmp_path / "checkpoints" / "last.pt"
    seen = {}

    def guarded(step):
        if step == 5:
            seen["bytes"] = path.read_bytes()  # the checkpoint of step 4
        return step_fn(step)

    with pytest.raises(NonFiniteLossError,
                       match=r"loss of optimiser 'G' at step 5.*last good checkpoint.*step 4"):
        trainer.fit(guarded)
    assert path.read_bytes() == seen["bytes"]
    ckpt = load_checkpoint(path)
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for m in ckpt["modules"].values() for v in m.values())


def test_ema_on_one_named_module(tmp_path):
    trainer, step_fn = _gan(tmp_path, steps=3, ema={"G": 0.5})
    assert set(trainer.emas) == {"G"}
    expect = {k: v.clone() for k, v in trainer.raw["G"].state_dict().items()}
    d0 = {k: v.clone() for k, v in trainer.emas["G"].module.state_dict().items()}
    assert all(torch.equal(expect[k], d0[k]) for k in expect)
    for _ in range(3):
        trainer.fit(step_fn, steps=trainer.step + 1)
        for k, v in trainer.raw["G"].state_dict().items():
            expect[k] = 0.5 * expect[k] + 0.5 * v
    for k, v in trainer.emas["G"].module.state_dict().items():
        assert torch.allclose(v, expect[k], atol=1e-6)
    assert not torch.equal(trainer.emas["G"].module[0].weight, trainer.raw["G"][0].weight)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert set(ckpt["emas"]) == {"G"}
    with pytest.raises(AttributeError, match="single-model"):
        trainer.ema  # noqa: B018
    with pytest.raises(ValueError, match=r"unknown modules \['E'\]"):
        Trainer({"G": nn.Linear(1, 1)}, None, TrainConfig(progress=False), ema={"E": 0.9})
    with pytest.raises(ValueError, match="ema_decay"):
        Trainer({"G": nn.Linear(1, 1)}, None, TrainConfig(progress=False, ema_decay=0.9))


def test_backward_step_clips_its_own_parameters(tmp_path):
    a, b = nn.Linear(1, 1), nn.Linear(1, 1)
    opts = {"a": torch.optim.SGD(a.parameters(), lr=1.0),
            "b": torch.optim.SGD(b.parameters(), lr=1.0)}
    cfg = TrainConfig(steps=1, out_dir=str(tmp_path), progress=False, tensorboard=False,
                      grad_clip=1e-3)
    t = Trainer({"a": a, "b": b}, opts, cfg, manual=True)
    wa, wb = a.weight.detach().clone(), b.weight.detach().clone()
    norms = {}

    def step_fn(step):
        loss = 100 * (a(torch.ones(1, 1)) + b(torch.ones(1, 1))).sum()
        norms["a"] = t.backward_step(loss, "a")
        return {"loss": loss.detach()}

    t.fit(step_fn)
    assert norms["a"] > 1
    assert 0 < (a.weight.detach() - wa).abs().max() <= 1e-3 + 1e-7
    assert torch.equal(b.weight.detach(), wb)  # only the named optimiser stepped
    with pytest.raises(KeyError, match="no optimiser 'c'"):
        t.backward_step(a(torch.ones(1, 1)).sum(), "c")
    with pytest.raises(ValueError, match="name the optimiser"):
        t.backward_step(a(torch.ones(1, 1)).sum())
    auto = Trainer(a, opts["a"], cfg)
    with pytest.raises(RuntimeError, match="manual=True"):
        auto.backward_step(a(torch.ones(1, 1)).sum())
    with pytest.raises(AttributeError, match="single-model"):
        t.model  # noqa: B018


def test_grad_scaler_path_in_manual_mode(tmp_path):
    """The fp16 path (scale, unscale, clip, step, update per backward_step) exercised on the CPU:
    power-of-two loss scaling is exact, so the losses equal those of the unscaled run, also with
    two discriminator steps in one trainer step."""
    def run(out, scaler):
        trainer, step_fn = _gan(out, steps=6, ema={"G": 0.9})
        if scaler:
            trainer.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)

        def twice(step):
            loss_d = F.softplus(trainer.modules["D"](trainer.modules["G"](
                torch.randn(16, 2))).mean())
            trainer.backward_step(loss_d, "D")  # an extra discriminator step
            return step_fn(step)

        return [h["loss"] for h in trainer.fit(twice)], trainer

    plain, _ = run(tmp_path / "plain", False)
    scaled, trainer = run(tmp_path / "scaled", True)
    assert scaled == plain
    assert trainer.scaler.get_scale() == 2.0**10  # no overflow, no growth yet
    assert load_checkpoint(tmp_path / "scaled" / "checkpoints" / "last.pt")["scaler"] is not None
