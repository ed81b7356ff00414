"""`neural3d diffusion train|sample` end to end on a tiny toy dataset (seconds)."""

import pytest
import torch

from neural3d.cli import main
from neural3d.config import ConfigError, load_config
from neural3d.methods import load
from neural3d.methods.diffusion2d import DiffusionExperiment, load_toy_images

pytestmark = pytest.mark.usefixtures("one_thread")


TINY = ["data.objects=1", "data.views=3", "data.res=16", "data.supersample=1",
        "model.channels=8", "model.channel_mult=[1,2]", "model.attention_resolutions=[8]",
        "optim.batch=4", "train.steps=2", "train.progress=false", "train.tensorboard=false",
        "model.dim=32", "model.depth=1", "model.patch=4"]


@pytest.fixture(scope="module")
def toy_root(tmp_path_factory):
    return tmp_path_factory.mktemp("toy")


def load_experiment(path, overrides):
    return load_config(DiffusionExperiment, path, overrides)


@pytest.mark.parametrize("arch", ["unet", "dit", "mdm", "fdm"])
def test_train_then_sample(arch, toy_root, tmp_path, capsys):
    n = torch.get_num_threads()
    extra = {"mdm": ["model.mdm_resolutions=[16,8]", "model.shell_channels=[8]",
                     "model.mdm_loss_weights=[1,0.5]", "model.grow_at=[1]"],
             "fdm": ["model.fdm_stages=2"]}.get(arch, [])
    over = TINY + [f"data.root={toy_root}", f"model.architecture={arch}",
                   f"train.out_dir={tmp_path / 'run'}"] + extra
    try:
        assert main(["diffusion", "train", "--config", "configs/diffusion_toy_unet.yaml",
                     "--threads", "1", *over]) == 0
        ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
        assert ckpt.is_file()
        out = tmp_path / "grid.png"
        assert main(["diffusion", "sample", str(ckpt), "--sampler", "ddim", "--steps", "2",
                     "--cfg", "3.0", "--n", "2", "--threads", "1", "--out", str(out)]) == 0
        assert out.is_file() and str(out) in capsys.readouterr().out
        method = load(ckpt)
        assert method.name == "diffusion" and method.cfg.model.architecture == arch
        assert method.pipeline.res == 16
    finally:
        torch.set_num_threads(n)


def test_toy_images_are_labelled_and_scaled(toy_root):
    exp = load_experiment("configs/diffusion_toy_unet.yaml", TINY + [f"data.root={toy_root}"])
    x, y = load_toy_images(exp.data, progress=False)
    assert x.shape == (6, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert y.tolist() == [0, 0, 0, 1, 1, 1]
    assert x.max() == 1.0  # white background


def test_config_typo_is_reported():
    with pytest.raises(ConfigError, match="did you mean 'parameterization'"):
        load_experiment("configs/diffusion_toy_unet.yaml", ["diffusion.parametrization=eps"])
