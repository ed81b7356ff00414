"""Training logs: the logger interface, `--vis tensorboard|wandb|none`, and what every method
logs at its evaluation interval (read back from the event files)."""

import importlib.util

import pytest
import torch
from torch import nn

from neural3d.cli import main
from neural3d.config import ConfigError
from neural3d.export.media import tile_rows
from neural3d.train import TrainConfig, Trainer
from neural3d.train.loggers import make_logger

pytestmark = pytest.mark.usefixtures("one_thread")


def read_events(out):
    """``(scalar tags -> [(step, value)], image tags -> [step])`` of every event file under
    ``out/tb``."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    scalars, images = {}, {}
    files = sorted((out / "tb").glob("events.out.tfevents.*"))
    assert files, f"no event files in {out / 'tb'}"
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0, "images": 0})
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            scalars.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
        for tag in acc.Tags()["images"]:
            images.setdefault(tag, []).extend(e.step for e in acc.Images(tag))
    return scalars, images


def test_tile_rows_layout():
    x = torch.rand(2, 3, 4, 5, 3)
    g = tile_rows(x, pad=1)
    assert g.shape == (2 * 5 + 1, 3 * 6 + 1, 3)
    for r in range(2):
        for k in range(3):
            assert torch.equal(g[1 + 5 * r:5 + 5 * r, 1 + 6 * k:6 + 6 * k], x[r, k])
    assert (g[0] == 1).all() and (g[:, 0] == 1).all() and (g[-1] == 1).all()
    gray = tile_rows(torch.rand(1, 2, 3, 3, 1), pad=0)
    assert gray.shape == (3, 6, 3) and torch.equal(gray[..., 0], gray[..., 2])
    with pytest.raises(ValueError, match="tile_rows"):
        tile_rows(torch.rand(2, 4, 4, 3))


def test_trainer_writes_scalar_and_image_tags(tmp_path):
    model = nn.Linear(1, 1)
    cfg = TrainConfig(steps=4, out_dir=str(tmp_path), progress=False, log_every=2,
                      eval_every=2)
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), cfg)
    assert t.logger.how_to_view() == f"tensorboard --logdir {tmp_path / 'tb'}"
    t.fit(lambda s: {"loss": model(torch.ones(1, 1)).pow(2).sum()},
          eval_fn=lambda s: {"img": torch.full((4, 6, 3), 0.5), "psnr": 20.0 + s})
    t.close()
    scalars, images = read_events(tmp_path)
    assert [s for s, _ in scalars["train/loss"]] == [2, 4]
    assert "train/steps_per_s" in scalars
    assert scalars["eval/psnr"] == [(2, 22.0), (4, 24.0)]  # every eval_every steps and the end
    assert images["eval/img"] == [2, 4]


@pytest.mark.parametrize("off", [{"vis": "none"}, {"tensorboard": False}])
def test_logging_off_writes_nothing(tmp_path, off):
    model = nn.Linear(1, 1)
    cfg = TrainConfig(steps=2, out_dir=str(tmp_path), progress=False, log_every=1, **off)
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), cfg)
    t.fit(lambda s: {"loss": model(torch.ones(1, 1)).pow(2).sum()})
    assert t.logger is None and not (tmp_path / "tb").exists()


def test_bad_vis_and_missing_wandb_are_one_line_errors(tmp_path, monkeypatch):
    from neural3d.config import validate

    with pytest.raises(ConfigError, match=r"^train\.vis: must be one of tensorboard, wandb, "
                                          r"none, got 'visdom'$"):
        validate(TrainConfig(vis="visdom"), "train")
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "wandb" else real(name, *a))
    with pytest.raises(ConfigError, match=r"^vis: wandb is not installed: pip install "
                                          r"'neural3d\[wandb\]'"):
        make_logger("wandb", tmp_path)


# ----------------------------------------------------------------------------- methods
def _ssdnerf(tmp_path, **train):
    from neural3d.methods.ssdnerf import SSDNeRF
    from neural3d.methods.ssdnerf.config import tiny_config

    return SSDNeRF(tiny_config(tmp_path / "data", tmp_path / "run", **train))


def _stylenerf(tmp_path, **train):
    from neural3d.methods.stylenerf.config import tiny_config
    from neural3d.methods.stylenerf.method import StyleNeRF

    return StyleNeRF(tiny_config(tmp_path / "data", tmp_path / "run", **train))


def _diffusion(tmp_path, **train):
    from neural3d.methods.diffusion2d import DiffusionExperiment
    from neural3d.methods.diffusion2d.method import Diffusion2D
    from neural3d.train import TrainConfig

    cfg = DiffusionExperiment()
    cfg.data.root, cfg.data.objects, cfg.data.views = str(tmp_path / "data"), 1, 2
    cfg.data.res, cfg.data.supersample = 16, 1
    cfg.model.channels, cfg.model.channel_mult, cfg.model.attention_resolutions = 8, [1, 2], []
    cfg.optim.batch = 4
    cfg.train = TrainConfig(**{"steps": 4, "out_dir": str(tmp_path / "run"), "progress": False,
                               "ckpt_every": 0, **train})
    return Diffusion2D(cfg)


def _fit(tmp_path, **train):
    from neural3d.data.toy import write_toy_dataset
    from neural3d.methods.fit import Fit, FitConfig

    write_toy_dataset(tmp_path / "data", "cars", objects=1, views=10, test_views=0, res=16,
                      seed=0, progress=False)
    cfg = FitConfig(data=str(tmp_path / "data" / "cars_train" / "car_train_00000"),
                    out_dir=str(tmp_path / "run"), steps=4, rays=128, grid_res=16,
                    turntable_frames=0, progress=False, ckpt_every=0, **train)
    return Fit(cfg, log=lambda *_: None)


METHODS = {"ssdnerf": _ssdnerf, "stylenerf": _stylenerf, "diffusion": _diffusion,
           "fit": _fit}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_logs_samples_or_heldout_renders(name, tmp_path):
    """A tiny run of each method with the TensorBoard backend: training scalars every step,
    the method's sample grid (or fit's held-out render and PSNR) at its evaluation interval
    and at the end; the start prints the run folder and the tensorboard line."""
    from neural3d.methods.training import train_method

    if name == "fit":
        method = _fit(tmp_path, eval_every=2, log_every=1)
    else:
        method = METHODS[name](tmp_path, eval_every=2, log_every=1, tensorboard=True)
    lines = []
    train_method(method, log=lines.append)
    out = tmp_path / "run"
    assert f"run folder: {out}" in lines
    assert f"logs: tensorboard --logdir {out / 'tb'}" in lines
    scalars, images = read_events(out)
    assert [s for s, _ in scalars["train/loss"]] == [1, 2, 3, 4]
    if name == "fit":
        assert [s for s, _ in scalars["eval/psnr_heldout"]] == [2, 4]
        assert images["eval/render"] == [2, 4]
        assert images["final/heldout"] == [4] and "final/psnr_heldout" in scalars
    else:
        assert images["eval/samples"] == [2, 4]


@pytest.mark.parametrize("name", ["diffusion", "stylenerf"])
def test_logging_leaves_training_unchanged(name, tmp_path):
    """Sampling for the logs forks the RNG: the losses equal those of a run without logs."""
    from neural3d.methods.training import train_method

    quiet, _ = train_method(METHODS[name](tmp_path / "a", vis="none", eval_every=0),
                            log=lambda *_: None)
    logged, _ = train_method(METHODS[name](tmp_path / "b", eval_every=1, tensorboard=True),
                             log=lambda *_: None)
    assert [h["loss"] for h in quiet.history] == [h["loss"] for h in logged.history]
    assert read_events(tmp_path / "b" / "run")[1]["eval/samples"] == [1, 2, 3, 4]


def test_vis_option_of_the_commands(tmp_path, capsys):
    """`--vis` reaches `train.vis` (`vis` in fit's flat config, through `neural3d fit` too); a
    bad value is refused by the parser."""
    import yaml

    from neural3d.commands.train import parse
    from neural3d.data.toy import write_toy_dataset

    with pytest.raises(SystemExit):
        parse("ssdnerf", ["--vis", "visdom"])
    assert "invalid choice: 'visdom'" in capsys.readouterr().err
    tiny = {"data.root": tmp_path / "data", "data.toy": "true", "data.toy_objects": 2,
            "data.toy_views": 2, "data.toy_test_objects": 1, "data.toy_test_views": 2,
            "data.toy_res": 16,
            "mapping.z_dim": 8, "mapping.w_dim": 8, "mapping.layers": 1,
            "generator.output_res": 16, "generator.render_res": 8, "generator.n_samples": 4,
            "generator.n_importance": 0, "generator.nerf_hidden": 8,
            "generator.nerf_layers": 1, "generator.features": 8, "generator.channels": "[8]",
            "discriminator.channel_base": 64, "discriminator.channel_max": 8,
            "discriminator.mbstd_group": 2, "optim.batch": 2, "progressive.enabled": "false",
            "train.steps": 1, "train.progress": "false", "train.out_dir": tmp_path / "gan"}
    assert main(["train", "stylenerf", "--vis", "none", "--threads", "1",
                 *[f"{k}={v}" for k, v in tiny.items()]]) == 0
    out = capsys.readouterr().out
    assert f"run folder: {tmp_path / 'gan'}" in out and "tensorboard --logdir" not in out
    assert not (tmp_path / "gan" / "tb").exists()
    assert yaml.safe_load((tmp_path / "gan" / "config.yaml").read_text())["train"]["vis"] == \
        "none"
    write_toy_dataset(tmp_path / "obj", "cars", objects=1, views=10, test_views=0, res=16,
                      seed=0, progress=False)
    assert main(["fit", "--data", str(tmp_path / "obj" / "cars_train" / "car_train_00000"),
                 "--steps", "1", "--out", str(tmp_path / "fit"), "--quiet", "--vis", "none",
                 "--threads", "1", "rays=64", "grid_res=16", "turntable_frames=0"]) == 0
    assert yaml.safe_load((tmp_path / "fit" / "config.yaml").read_text())["vis"] == "none"
    assert not (tmp_path / "fit" / "tb").exists()


@pytest.mark.skipif(importlib.util.find_spec("wandb") is None,
                    reason="wandb is not installed (pip install 'neural3d[wandb]')")
def test_wandb_offline_run(tmp_path, monkeypatch):
    """`vis=wandb` with WANDB_MODE=offline: an offline run under OUT/wandb whose log holds
    the scalar tags and whose media hold the sample grid, without network."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    model = nn.Linear(1, 1)
    cfg = TrainConfig(steps=2, out_dir=str(tmp_path), progress=False, log_every=1,
                      vis="wandb")
    t = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), cfg,
                record={"method": "toy"})
    view = t.logger.how_to_view()
    t.fit(lambda s: {"loss": model(torch.ones(1, 1)).pow(2).sum()},
          eval_fn=lambda s: {"samples": torch.rand(4, 4, 3), "psnr": 20.0})
    t.close()
    import wandb

    wandb.teardown()  # wandb's service writes the offline log asynchronously: wait for it
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and f"wandb sync {runs[0]}" in view
    log = next(runs[0].glob("run-*.wandb")).read_bytes()  # wandb's record log (protobuf)
    for tag in (b"train/loss", b"train/steps_per_s", b"eval/psnr", b"eval/samples"):
        assert tag in log, tag
    assert [p.name.split("_")[1] for p in (runs[0] / "files" / "media" / "images" /
                                           "eval").glob("samples_*.png")] == ["2"]


def test_write_labelled_stacks_down_or_across(tmp_path):
    import imageio.v3 as iio
    import numpy as np

    from neural3d.export.media import write_labelled

    a, b = tmp_path / "a.png", tmp_path / "b.png"
    iio.imwrite(a, np.zeros((10, 20, 3), np.uint8))
    iio.imwrite(b, np.full((30, 5, 3), 255, np.uint8))
    down = iio.imread(write_labelled(tmp_path / "down.png", [("a", a), ("b", b)], label_height=4))
    across = iio.imread(write_labelled(tmp_path / "x" / "across.png", [("a", a), ("b", b)],
                                       across=True, label_height=4))
    assert down.shape == (10 + 4 + 30 + 4, 20, 3)
    assert across.shape == (30 + 4, 20 + 5, 3)
    assert (across[4:14, :20] == 0).all() and (down[4:14, :20] == 0).all()   # a, under its label
