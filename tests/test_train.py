"""Shared trainer: exact resume, NaN guard, atomic checkpoints, run.json, EMA, clipping."""

import json

import pytest
import torch
from torch import nn

from neural3d.train import (
    EMA,
    CheckpointError,
    NonFiniteLossError,
    TrainConfig,
    Trainer,
    load_checkpoint,
)


def _make(tmp_path, steps, resume="auto", ema=0.9, seed=3):
    torch.manual_seed(123)  # model init identical in every run
    model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, 1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=3, gamma=0.7)
    cfg = TrainConfig(steps=steps, seed=seed, out_dir=str(tmp_path), ema_decay=ema,
                      grad_clip=1.0, progress=False, tensorboard=False, log_every=1,
                      ckpt_every=0, resume=resume)
    trainer = Trainer(model, opt, cfg, scheduler=sched, record={"what": "test"})
    X = torch.linspace(-1, 1, 256).reshape(64, 4)
    y = X.sum(1, keepdim=True).sin()
    g = trainer.generator("data")

    def step_fn(step):
        idx = torch.randint(0, 64, (8,), generator=g)
        noise = 0.01 * torch.randn(8, 1)  # global RNG, also checkpointed
        loss = ((trainer.model(X[idx]) - y[idx] - noise) ** 2).mean()
        return {"loss": loss}

    return trainer, step_fn


def test_exact_resume(tmp_path):
    N = 12
    full, fn = _make(tmp_path / "full", N)
    full.maybe_resume()
    straight = [h["loss"] for h in full.fit(fn)]

    first, fn1 = _make(tmp_path / "split", N // 2)
    first.fit(fn1)
    del first
    torch.manual_seed(999)  # disturb the global RNG: resume must restore it
    second, fn2 = _make(tmp_path / "split", N)
    assert second.maybe_resume() and second.step == N // 2
    resumed = [h["loss"] for h in second.fit(fn2)]
    assert len(resumed) == N
    assert resumed == straight  # exactly, not approximately
    for a, b in zip(full.module.state_dict().values(), second.module.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)
    for a, b in zip(full.ema.module.state_dict().values(),
                    second.ema.module.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_run_json_and_checkpoint_files(tmp_path):
    trainer, fn = _make(tmp_path, 4)
    trainer.fit(fn)
    info = json.loads((tmp_path / "run.json").read_text())
    assert info["status"] == "finished" and info["seed"] == 3 and info["step"] == 4
    assert info["config"] == {"what": "test"} and "torch" in info["versions"]
    assert "commit" in info["git"]
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["step"] == 4 and "data" in ckpt["generators"]
    assert not [p for p in (tmp_path / "checkpoints").iterdir() if p.name.endswith(".tmp")]


def test_nan_guard_keeps_last_good_checkpoint(tmp_path):
    model = nn.Linear(2, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    cfg = TrainConfig(steps=10, out_dir=str(tmp_path), progress=False, tensorboard=False,
                      ckpt_every=2)
    trainer = Trainer(model, opt, cfg)

    def step_fn(step):
        loss = model(torch.ones(1, 2)).sum() ** 2
        if step == 5:
            loss = loss * float("nan")
        return {"loss": loss}

    with pytest.raises(NonFiniteLossError, match=r"step 5.*last good checkpoint.*step 4"):
        trainer.fit(step_fn)
    ckpt = load_checkpoint(tmp_path / "checkpoints" / "last.pt")
    assert ckpt["step"] == 4
    assert all(torch.isfinite(v).all() for v in ckpt["model"].values())
    assert json.loads((tmp_path / "run.json").read_text())["status"] == "nonfinite"


def test_missing_loss_key_and_bad_checkpoint(tmp_path):
    model = nn.Linear(2, 1)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1),
                      TrainConfig(steps=1, out_dir=str(tmp_path), progress=False,
                                  tensorboard=False))
    with pytest.raises(KeyError, match="loss"):
        trainer.fit(lambda s: {"psnr": torch.tensor(1.0)})
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="bad.pt"):
        load_checkpoint(bad)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "nope.pt")


def _weight_from_zero_to_one(decay: float) -> tuple[nn.Module, EMA]:
    """A one-weight model whose EMA (``decay``) was taken at weight 0, now at weight 1."""
    m = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        m.weight.fill_(0.0)
    ema = EMA(m, decay)
    with torch.no_grad():
        m.weight.fill_(1.0)
    return m, ema


def test_ema_and_grad_clip():
    m, ema = _weight_from_zero_to_one(0.5)
    ema.update(m)
    assert ema.module.weight.item() == pytest.approx(0.5)
    ema.update(m)
    assert ema.module.weight.item() == pytest.approx(0.75)


def test_ema_rampup_caps_the_half_life_then_reaches_the_decay():
    from neural3d.train.ema import rampup_decay

    d = 0.5 ** (16 / 4000)                       # SSDNeRF: ema_kimg 4 at batch 16 (250 steps)
    assert rampup_decay(d, 0, 0.0) == d
    assert rampup_decay(d, 0, 0.05) == pytest.approx(0.5 ** 20)      # half-life 0.05 steps
    assert rampup_decay(d, 199, 0.05) == pytest.approx(0.5 ** 0.1)   # half-life 10 steps
    assert rampup_decay(d, 10 ** 6, 0.05) == pytest.approx(d)        # capped by 250 steps
    m, ema = _weight_from_zero_to_one(0.9)
    ema.update(m, decay=0.25)                    # a per-call decay overrides the stored one
    assert ema.module.weight.item() == pytest.approx(0.75) and ema.decay == 0.9


def test_grad_clip_reported(tmp_path):
    model = nn.Linear(1, 1)
    cfg = TrainConfig(steps=2, out_dir=str(tmp_path), progress=False, tensorboard=False,
                      grad_clip=1e-3)
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=1.0), cfg)
    w0 = model.weight.detach().clone()
    hist = t.fit(lambda s: {"loss": (model(torch.ones(1, 1)) * 100).sum()})
    assert hist[0]["grad_norm"] > 1
    # each step moved the weights by at most lr * clip
    assert (model.weight.detach() - w0).abs().max() <= 2 * 1e-3 + 1e-6


def test_tensorboard_logging(tmp_path):
    model = nn.Linear(1, 1)
    cfg = TrainConfig(steps=3, out_dir=str(tmp_path), progress=True, tensorboard=True,
                      log_every=1, eval_every=2)
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), cfg)
    t.fit(lambda s: {"loss": model(torch.ones(1, 1)).pow(2).sum(), "psnr": torch.tensor(20.0)},
          eval_fn=lambda s: {"img": torch.rand(4, 4, 3), "psnr": 21.0})
    t.close()
    assert list((tmp_path / "tb").glob("events.out.tfevents.*"))


def test_single_model_checkpoint_keys_and_format_1(tmp_path):
    trainer, fn = _make(tmp_path / "a", 4)
    trainer.fit(fn)
    ckpt = load_checkpoint(tmp_path / "a" / "checkpoints" / "last.pt")
    assert ckpt["format"] == "neural3d-trainer-2"
    # the format-1 keys other code reads are aliases, stored once
    assert ckpt["model"] is ckpt["modules"]["model"] and ckpt["ema"] is ckpt["emas"]["model"]
    assert set(ckpt["ema"]) == {"decay", "module"}
    assert set(ckpt["optimizers"]) == {"main"} and set(ckpt["schedulers"]) == {"main"}
    # a format-1 file (single model, "scheduler", no "modules"/"emas") still resumes
    old = {k: v for k, v in ckpt.items() if k not in ("modules", "emas", "schedulers")}
    old.update(format="neural3d-trainer-1", scheduler=ckpt["schedulers"]["main"])
    torch.save(old, tmp_path / "old.pt")
    again, _ = _make(tmp_path / "b", 4, resume=str(tmp_path / "old.pt"))
    assert again.maybe_resume() and again.step == 4
    for src, dst in ((trainer.module, again.module), (trainer.ema.module, again.ema.module)):
        for a, b in zip(src.state_dict().values(), dst.state_dict().values(), strict=True):
            assert torch.equal(a, b)
    assert again.schedulers["main"].state_dict() == trainer.schedulers["main"].state_dict()
    assert again.optimizers["main"].state_dict()["state"][0]["step"] == 4
    torch.save(dict(old, format="other-9"), tmp_path / "bad.pt")
    bad, _ = _make(tmp_path / "c", 4, resume=str(tmp_path / "bad.pt"))
    with pytest.raises(CheckpointError, match=r"bad\.pt.*unknown checkpoint format 'other-9'"):
        bad.maybe_resume()
