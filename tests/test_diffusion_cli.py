"""`neural3d diffusion train|sample` end to end on a tiny toy dataset (seconds)."""

import pytest
import torch

from neural3d.cli import main
from neural3d.config import ConfigError, load_config
from neural3d.methods import load
from neural3d.methods.diffusion2d import (
    Diffusion2D,
    DiffusionExperiment,
    DiffusionPipeline,
    load_toy_images,
)

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


@pytest.mark.parametrize("arch", ["unet", "dit", "mdm", "fdm", "kaleido", "dart", "dart_ar",
                                  "cascade", "latent"])
def test_train_then_sample(arch, toy_root, tmp_path, capsys):
    n = torch.get_num_threads()
    extra = {"mdm": ["model.mdm_resolutions=[16,8]", "model.shell_channels=[8]",
                     "model.mdm_loss_weights=[1,0.5]", "model.grow_at=[1]"],
             "fdm": ["model.fdm_stages=2"],
             "kaleido": ["model.kaleido.clusters=4", "model.kaleido.prior_dim=16"],
             "dart": ["model.dart.steps=3"],
             "dart_ar": ["model.dart.steps=2", "model.dart.token_ar=true"],
             "cascade": ["model.cascade.base_res=8", "model.cascade.sr_channels=8",
                         "model.cascade.sr_channel_mult=[1,2]",
                         "model.cascade.sr_attention_resolutions=[8]"],
             # step 0 trains the autoencoder, step 1 the latent diffusion model
             "latent": ["model.latent.factor=2", "model.latent.ae_channels=8",
                        "model.latent.ae_steps=1"]}.get(arch, [])
    config = {"kaleido": "configs/diffusion_toy_kaleido.yaml",
              "dart": "configs/diffusion_toy_dart.yaml",
              "dart_ar": "configs/diffusion_toy_dart.yaml"}.get(
        arch, "configs/diffusion_toy_unet.yaml")
    arch = "dart" if arch == "dart_ar" else arch
    over = TINY + [f"data.root={toy_root}", f"model.architecture={arch}",
                   f"train.out_dir={tmp_path / 'run'}"] + extra
    # DART makes model.dart.steps calls with its own sampler
    steps = [] if arch == "dart" else ["--sampler", "ddim", "--steps", "2"]
    steps += ["--aug-level", "0.2"] if arch == "cascade" else []
    try:
        assert main(["diffusion", "train", "--config", config, "--threads", "1", *over]) == 0
        ckpt = tmp_path / "run" / "checkpoints" / "last.pt"
        assert ckpt.is_file()
        out = tmp_path / "grid.png"
        assert main(["diffusion", "sample", str(ckpt), *steps,
                     "--cfg", "3.0", "--n", "2", "--threads", "1", "--out", str(out)]) == 0
        assert out.is_file() and str(out) in capsys.readouterr().out
        method = load(ckpt)
        assert method.name == "diffusion" and method.cfg.model.architecture == arch
        assert method.pipeline.res == 16
        if arch == "latent":  # measured at the stage switch, stored in the checkpoint
            assert method.pipeline.net.latent_std > 0
    finally:
        torch.set_num_threads(n)


def test_toy_images_are_labelled_and_scaled(toy_root):
    exp = load_experiment("configs/diffusion_toy_unet.yaml", TINY + [f"data.root={toy_root}"])
    x, y = load_toy_images(exp.data, progress=False)
    assert x.shape == (6, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert y.tolist() == [0, 0, 0, 1, 1, 1]
    assert x.max() == 1.0  # white background


def test_kaleido_checkpoint_keeps_its_extractor(toy_root, tmp_path):
    over = TINY + [f"data.root={toy_root}", "model.kaleido.clusters=4",
                   "model.kaleido.prior_dim=16", f"train.out_dir={tmp_path / 'run'}"]
    exp = load_experiment("configs/diffusion_toy_kaleido.yaml", over)
    assert main(["diffusion", "train", "--config", "configs/diffusion_toy_kaleido.yaml",
                 "--threads", "1", *over]) == 0
    ext = load(tmp_path / "run" / "checkpoints" / "last.pt").pipeline.net.extractor
    x, _ = load_toy_images(exp.data, progress=False)
    fresh = DiffusionPipeline(exp).net.extractor
    fresh.fit(x, exp.model.kaleido.kmeans_iters, exp.data.seed)
    assert bool(ext.fitted) and torch.equal(ext.centroids, fresh.centroids)
    assert torch.equal(ext(x), fresh(x))


@pytest.mark.parametrize("name,arch", [("kaleido", "kaleido"), ("dart", "dart")])
def test_new_configs_load(name, arch):
    exp = load_experiment(f"configs/diffusion_toy_{name}.yaml", [])
    assert exp.model.architecture == arch and exp.data.res == 32
    assert exp.model.kaleido.clusters == 16 and exp.model.dart.steps == 16
    pipe = DiffusionPipeline(exp)
    assert pipe.num_classes == 2


@pytest.mark.parametrize("name", ["cascade", "latent"])
def test_baseline_configs_load(name):
    exp = load_experiment(f"configs/diffusion_toy_{name}.yaml", [])
    assert exp.model.architecture == name and exp.data.res == 64
    pipe = DiffusionPipeline(exp)
    if name == "latent":
        assert pipe.net.denoiser.resolution == 16 and not pipe.net.scale_fitted
        with pytest.raises(RuntimeError, match="ae_steps"):
            pipe.generate(1, steps=1)
        # the learning rate warms up again when the diffusion stage starts
        lr = Diffusion2D(exp).build().scheduler.lr_lambdas[0]
        ae, warm = exp.model.latent.ae_steps, exp.optim.warmup
        assert lr(0) == lr(ae) == 1 / warm and lr(ae - 1) == 1 == lr(ae + warm)
    else:
        assert pipe.net.base_res == 32 and pipe.net.sr.unet.resolution == 64
    with pytest.raises(ValueError, match="model.cascade.base_res"):
        DiffusionPipeline(load_experiment("configs/diffusion_toy_cascade.yaml",
                                          ["model.cascade.base_res=48"]))
    with pytest.raises(ValueError, match="cascade only"):
        DiffusionPipeline(load_experiment("configs/diffusion_toy_unet.yaml", [])).generate(
            1, steps=1, aug_level=0.1)


def test_dart_config_errors():
    exp = load_experiment("configs/diffusion_toy_dart.yaml", ["diffusion.parameterization=v"])
    with pytest.raises(ValueError, match="diffusion.parameterization=x0"):
        DiffusionPipeline(exp)
    with pytest.raises(ConfigError, match="did you mean 'history_mask'"):
        load_experiment("configs/diffusion_toy_dart.yaml", ["model.dart.history=x"])
    pipe = DiffusionPipeline(load_experiment("configs/diffusion_toy_dart.yaml",
                                             ["model.dim=32", "model.depth=1"]))
    with pytest.raises(ValueError, match="model.dart.steps"):
        pipe.generate(1, sampler="ddim", steps=50)


def test_config_typo_is_reported():
    with pytest.raises(ConfigError, match="did you mean 'parameterization'"):
        load_experiment("configs/diffusion_toy_unet.yaml", ["diffusion.parametrization=eps"])
