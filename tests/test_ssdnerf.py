"""SSDNeRF: gradient paths, latent cache, guided reconstruction, train -> checkpoint -> resume."""

import dataclasses

import pytest
import torch

from neural3d.methods.ssdnerf import (
    LatentAdam,
    LatentCache,
    SSDNeRFModel,
    build,
    guided_sample,
    load_split,
    load_ssdnerf,
    make_step_fn,
    train,
)
from neural3d.methods.ssdnerf.config import tiny_config
from neural3d.methods.ssdnerf.recon import observed_rays, render_loss
from neural3d.train import NonFiniteLossError, Trainer


@pytest.fixture(autouse=True)
def _torch_backend(monkeypatch):
    monkeypatch.setenv("NEURAL3D_BACKEND", "torch")  # no kernel JIT in unit tests
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    return tmp_path_factory.mktemp("toy")


def _latent_grad(cfg, data_root, tmp_path, step=0):
    data = load_split(cfg.data, "train")
    model, cache, opts = build(cfg, len(data))
    trainer = Trainer(model, opts, cfg.train)
    step_fn = make_step_fn(trainer, model, opts["latents"], data, cfg)
    out = step_fn(step)
    out["loss"].backward()
    lat = opts["latents"].param_groups[0]["params"]
    unet_grad = sum(p.grad.abs().sum() for p in model.unet.parameters() if p.grad is not None)
    return (lat[0].grad if lat else None), float(unet_grad)


def test_diffusion_gradient_reaches_latents_only_in_single_stage(data_root, tmp_path):
    base = tiny_config(data_root, tmp_path / "run")
    # isolate the diffusion term: no rendering loss, no regulariser
    base.loss = dataclasses.replace(base.loss, render_weight=0.0, reg_weight=0.0)
    base.optim.latent_init_std = 0.1
    g_single, u_single = _latent_grad(base, data_root, tmp_path)
    assert g_single is not None and g_single.abs().max() > 0
    assert u_single > 0
    two = dataclasses.replace(base, optim=dataclasses.replace(base.optim, mode="two_stage",
                                                              stage1_steps=10))
    g_two, u_two = _latent_grad(two, data_root, tmp_path)
    assert g_two is None or g_two.abs().max() == 0   # stage 1: prior does not shape latents
    assert u_two > 0                                # ... but the U-Net still learns
    # stage 2: latents frozen (not handed to the optimiser), only the U-Net trains
    g_s2, u_s2 = _latent_grad(two, data_root, tmp_path, step=10)
    assert g_s2 is None and u_s2 > 0


def test_latent_cache_round_trip_touches_only_batch_rows(tmp_path):
    g = torch.Generator().manual_seed(0)
    cache = LatentCache(6, (3, 2, 4, 4), init_std=0.1, path="cache", generator=g, root=tmp_path)
    before = cache.latents.clone()
    opt = LatentAdam(cache, lr=0.1)
    idx = torch.tensor([1, 4])
    lat = opt.fetch(idx)
    assert lat.shape == (2, 3, 2, 4, 4) and lat.requires_grad and lat.is_leaf
    (lat ** 2).sum().backward()
    opt.step()
    changed = (cache.latents != before).flatten(1).any(1)
    assert changed.tolist() == [False, True, False, False, True, False]
    assert cache.steps.tolist() == [0, 1, 0, 0, 1, 0]
    assert cache.tensors["exp_avg"][idx].abs().sum() > 0
    assert cache.tensors["exp_avg"][[0, 2, 3, 5]].abs().sum() == 0
    # file-backed: a new cache on the same folder sees the update
    again = LatentCache(6, (3, 2, 4, 4), path="cache", root=tmp_path)
    assert torch.equal(again.latents, cache.latents)
    # in-memory state dict round trip, including per-object Adam moments and steps
    mem = LatentCache(6, (3, 2, 4, 4), init_std=0.1, generator=torch.Generator().manual_seed(1))
    o2 = LatentAdam(mem, lr=0.1)
    lat = o2.fetch(torch.tensor([0]))
    lat.sum().backward()
    o2.step()
    state = o2.state_dict()
    fresh = LatentAdam(LatentCache(6, (3, 2, 4, 4)), lr=0.5)
    fresh.load_state_dict(state)
    for k in LatentCache.FIELDS:
        assert torch.equal(fresh.cache.tensors[k], mem.tensors[k])
    assert torch.equal(fresh.cache.steps, mem.steps) and fresh.param_groups[0]["lr"] == 0.1
    with pytest.raises(ValueError, match="mismatch"):
        LatentAdam(LatentCache(5, (3, 2, 4, 4))).load_state_dict(state)


@pytest.mark.parametrize("wrt", ["x0", "xt"])
def test_guided_sampling_lowers_rendering_loss(data_root, tmp_path, wrt):
    cfg = tiny_config(data_root, tmp_path / "run")
    torch.manual_seed(0)
    model = SSDNeRFModel(cfg).eval()
    test = load_split(cfg.data, "test")
    images, cams = test.views(0)
    images, cams = images[:1], cams[torch.tensor([0])]
    rc = dataclasses.replace(cfg.recon, guidance_steps=8, guidance_wrt=wrt,
                             guidance_scale={"x0": 30.0, "xt": 100.0}[wrt])
    x_T = torch.randn(1, 3 * model.C, model.R, model.R, generator=torch.Generator().manual_seed(3))
    guided = guided_sample(model, images, cams, rc, x_T=x_T)
    plain = guided_sample(model, images, cams, dataclasses.replace(rc, guidance_scale=0.0),
                          x_T=x_T)
    o, d, rgb = observed_rays(cams, images)
    with torch.no_grad():
        lg, lp = render_loss(model, guided, o, d, rgb), render_loss(model, plain, o, d, rgb)
    assert lg < 0.92 * lp, (float(lg), float(lp))


def test_train_checkpoint_resume_matches_uninterrupted(data_root, tmp_path):
    full = train(tiny_config(data_root, tmp_path / "full", steps=6))
    train(tiny_config(data_root, tmp_path / "part", steps=6, ckpt_every=3), steps=3)
    assert (tmp_path / "part" / "checkpoints" / "last.pt").is_file()
    resumed = train(tiny_config(data_root, tmp_path / "part", steps=6))
    assert resumed.step == 6
    assert [h["loss"] for h in resumed.history] == pytest.approx(
        [h["loss"] for h in full.history], rel=1e-5, abs=1e-7)
    a, b = load_ssdnerf(tmp_path / "full/checkpoints/last.pt"), load_ssdnerf(
        tmp_path / "part/checkpoints/last.pt")
    assert torch.allclose(a.latents, b.latents, atol=1e-6)
    for (k, p), q in zip(a.model.state_dict().items(), b.model.state_dict().values(),
                         strict=True):
        assert torch.allclose(p, q, atol=1e-6), k
    assert a.checkpoint_step == 6 and a.latents.shape == (4, 3, 2, 8, 8)
    lat = a.model.sample(2, generator=torch.Generator().manual_seed(0), steps=2)
    assert lat.shape == (2, 3, 2, 8, 8) and torch.isfinite(lat).all()


def test_nan_guard_keeps_last_good_checkpoint(data_root, tmp_path, monkeypatch):
    cfg = tiny_config(data_root, tmp_path / "nan", steps=2)
    train(cfg)
    monkeypatch.setattr(SSDNeRFModel, "diffusion_loss",
                        lambda self, lat, g=None, reduce=True, update_norm=True:
                        lat.sum() * float("nan"))
    with pytest.raises(NonFiniteLossError):
        train(tiny_config(data_root, tmp_path / "nan", steps=4))
    assert load_ssdnerf(tmp_path / "nan/checkpoints/last.pt").checkpoint_step == 2


def test_cli_train_and_sample(data_root, tmp_path, capsys):
    from neural3d.cli import main

    out = tmp_path / "cli"
    cfg = tiny_config(data_root, out)
    from neural3d.config import save_config

    save_config(cfg, tmp_path / "tiny.yaml")
    assert main(["train", "ssdnerf", "--config", str(tmp_path / "tiny.yaml"),
                 "train.steps=2", "--threads", "1"]) == 0
    ckpt = out / "checkpoints" / "last.pt"
    assert ckpt.is_file() and (out / "config.yaml").is_file()
    assert main(["sample", "ssdnerf", str(ckpt), "--num", "2", "--out", str(tmp_path / "s"),
                 "--frames", "4", "--steps", "2"]) == 0
    printed = capsys.readouterr().out
    assert str(tmp_path / "s" / "grid.png") in printed and printed.count("turntable_") == 2
    assert (tmp_path / "s" / "grid.png").is_file()
    assert main(["train", "nosuchmethod", "--config", str(tmp_path / "tiny.yaml")]) == 2
    assert main(["train", "ssdnerf", "--config", str(tmp_path / "tiny.yaml"),
                 "optim.moed=single"]) == 2


def test_file_backed_cache_missing_is_named(data_root, tmp_path, capsys):
    """The cache path is stored relative to the run; a deleted cache is a one-line error naming
    its file, when loading and when resuming (no restart from zeros)."""
    from neural3d.cli import main
    from neural3d.train import CheckpointError

    rel = tiny_config(data_root, tmp_path / "rel", steps=2)
    rel.optim.cache_path = "latents"
    train(rel)
    a = load_ssdnerf(tmp_path / "rel/checkpoints/last.pt")
    assert a.latents.abs().sum() > 0
    state = torch.load(tmp_path / "rel/checkpoints/last.pt", weights_only=True)
    assert state["optimizers"]["latents"]["cache"]["path"] == "latents"

    gone = tmp_path / "rel" / "latents" / "latents.f32"
    gone.unlink()
    ckpt = tmp_path / "rel/checkpoints/last.pt"
    with pytest.raises(CheckpointError, match=rf"{gone}: latent cache file is missing"):
        load_ssdnerf(ckpt)
    assert main(["sample", "ssdnerf", str(ckpt), "--num", "1", "--out", str(tmp_path / "s"),
                 "--frames", "2", "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and f"{gone}: latent cache file is missing" in err
    more = tiny_config(data_root, tmp_path / "rel", steps=4)
    more.optim.cache_path = "latents"
    with pytest.raises(CheckpointError, match=rf"{gone}: latent cache file is missing"):
        train(more)
    assert not gone.exists()  # the zero-filled file made while building is removed again
