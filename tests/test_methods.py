"""The method registry: a throw-away method registered from inside the tests is trained, sampled
and evaluated by the CLI (no edit under neural3d/commands or neural3d/eval), listed by
`neural3d methods`, loaded by `neural3d.load`; help for every command and method."""

from __future__ import annotations

import json
import sys
import textwrap
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint

import pytest
import torch
from torch import nn

import neural3d
from neural3d.cli import main
from neural3d.methods import registry
from neural3d.methods.registry import Built, Method, MethodError, register_method
from neural3d.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


@dataclass
class FlatColourConfig:
    target: list = field(default_factory=lambda: [0.2, 0.4, 0.6])
    lr: float = 0.1
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=40, progress=False, tensorboard=False, ckpt_every=0, out_dir="unused"))


class FlatColour(Method):
    """A 'scene' that is one colour everywhere: trains the colour towards ``target``, samples
    colours, reconstructs the mean colour of the observed views, renders flat images."""

    name = "flatcolour"
    summary = "test method: a flat colour"
    Config = FlatColourConfig

    def build(self) -> Built:
        net = nn.Linear(1, 3)
        return Built({"model": net}, {"main": torch.optim.Adam(net.parameters(), self.cfg.lr)})

    def step(self, trainer, step):
        colour = trainer.model(torch.ones(1, 1))[0]
        loss = (colour - torch.tensor(self.cfg.target)).pow(2).mean()
        return {"loss": loss}

    def sample(self, num, seed=0):
        g = torch.Generator().manual_seed(seed)
        return [torch.rand(3, generator=g) for _ in range(num)]

    def write_samples(self, out, num, seed=0):
        from neural3d.export.media import write_image_rows

        tiles = torch.stack([c.expand(4, 4, 3) for c in self.sample(num, seed)])
        return [write_image_rows(out / "colours.png", [tiles])]

    def reconstruct(self, images, cameras):
        return images.reshape(-1, 3).mean(0)

    def render(self, state, cameras):
        return state.expand(len(cameras), cameras.height, cameras.width, 3).clone()


@pytest.fixture
def flat():
    register_method(FlatColour)
    yield FlatColour
    registry.unregister_method(FlatColour.name)


@pytest.fixture(scope="module")
def toy_data(tmp_path_factory):
    from neural3d.data.toy import write_toy_dataset

    root = tmp_path_factory.mktemp("toy")
    write_toy_dataset(root, "cars", objects=1, views=2, test_views=4, res=16, seed=0,
                      test_objects=2, progress=False)
    return root


def test_throwaway_method_runs_through_the_cli(flat, toy_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["methods"]) == 0
    listed = capsys.readouterr().out
    assert "flatcolour" in listed and "train, sample, reconstruct, render" in listed
    assert main(["train", "flatcolour", f"train.out_dir={run}", "--threads", "1",
                 "lr=0.05"]) == 0
    ckpt = run / "checkpoints" / "last.pt"
    assert ckpt.is_file() and f"checkpoint: {ckpt}" in capsys.readouterr().out
    loaded = neural3d.load(ckpt)
    assert isinstance(loaded, FlatColour) and loaded.cfg.lr == 0.05
    first = json.loads((run / "run.json").read_text())["config"]
    assert first["method"] == "flatcolour" and first["format_version"] == registry.FORMAT_VERSION

    assert main(["sample", "flatcolour", str(ckpt), "--num", "3", "--out",
                 str(tmp_path / "s")]) == 0
    assert str(tmp_path / "s" / "colours.png") in capsys.readouterr().out

    assert main(["eval", "nvs", "--ckpt", str(ckpt), "--data", str(toy_data), "--input-views",
                 "0", "--no-fid", "--out", str(tmp_path / "nvs")]) == 0
    res = json.loads((tmp_path / "nvs" / "results.json").read_text())
    assert res["method"] == "flatcolour" and res["num_objects"] == 2
    assert 0 < res["mean"]["psnr"] < 60
    assert main(["eval", "generation", "--ckpt", str(ckpt), "--data", str(toy_data),
                 "--num", "2", "--poses-per-sample", "1", "--out", str(tmp_path / "gen")]) == 0
    assert json.loads((tmp_path / "gen" / "results.json").read_text())["num_images"] == 2


def test_wrong_method_and_missing_capability_are_one_line_errors(flat, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", "flatcolour", f"train.out_dir={run}", "train.steps=1"]) == 0
    ckpt = str(run / "checkpoints" / "last.pt")
    capsys.readouterr()
    assert main(["sample", "ssdnerf", ckpt, "--out", str(tmp_path / "x")]) == 2
    assert "is a 'flatcolour' checkpoint, not 'ssdnerf'" in capsys.readouterr().err
    assert main(["train", "nosuchmethod"]) == 2
    err = capsys.readouterr().err
    assert "unknown method 'nosuchmethod'" in err and "flatcolour" in err
    with pytest.raises(MethodError, match="not 'ssdnerf'"):
        neural3d.load(ckpt, method="ssdnerf")
    assert main(["train", "flatcolour", "lrr=1"]) == 2
    assert "did you mean 'lr'" in capsys.readouterr().err


def test_help_for_every_command_and_method(flat, capsys):
    for command in ("train", "sample"):
        with pytest.raises(SystemExit) as exc:
            main([command, "--help"])
        assert exc.value.code == 0
        out = capsys.readouterr().out
        assert "flatcolour" in out and "ssdnerf" in out and "diffusion" in out
    for name, cls in registry.available_methods().items():
        for command, cap in (("train", "train"), ("sample", "sample")):
            if cap not in cls.capabilities():
                continue
            with pytest.raises(SystemExit) as exc:
                main([command, name, "--help"])
            assert exc.value.code == 0
            out = capsys.readouterr().out
            assert f"neural3d {command} {name}" in out and cls.summary in out
            if command == "train":
                assert "train.steps" in out  # the config keys are listed
        for task in ("nvs", "generation"):
            with pytest.raises(SystemExit) as exc:
                main(["eval", task, "--method", name, "--help"])
            assert exc.value.code == 0
            assert f"neural3d eval {task}" in capsys.readouterr().out


def test_entry_point_plugin_is_discovered(tmp_path, monkeypatch):
    (tmp_path / "n3d_plugin_pkg.py").write_text(textwrap.dedent("""
        from dataclasses import dataclass
        from neural3d.methods.registry import Method

        @dataclass
        class Cfg:
            x: int = 1

        class PluginMethod(Method):
            name = "plugin-thing"
            summary = "from an entry point"
            Config = Cfg
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    ep = EntryPoint(name="plugin-thing", value="n3d_plugin_pkg:PluginMethod",
                    group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr("importlib.metadata.entry_points",
                        lambda group=None: [ep] if group == registry.ENTRY_POINT_GROUP else [])
    monkeypatch.setattr(registry, "_DISCOVERED", False)
    try:
        methods = registry.available_methods()
        assert "plugin-thing" in methods and methods["plugin-thing"].capabilities() == ()
        assert {"ssdnerf", "diffusion"} <= set(methods)
    finally:
        registry.unregister_method("plugin-thing")
        sys.modules.pop("n3d_plugin_pkg", None)


def test_register_rejects_bad_methods():
    class NoName(Method):
        Config = FlatColourConfig

    with pytest.raises(MethodError, match="non-empty `name`"):
        register_method(NoName)

    class Taken(FlatColour):
        name = "ssdnerf"

    with pytest.raises(MethodError, match="taken"):
        register_method(Taken)


@dataclass
class TinyGANConfig:
    train: TrainConfig = field(default_factory=lambda: TrainConfig(
        steps=6, ckpt_every=3, progress=False, tensorboard=False, out_dir="unused"))


class TinyGAN(Method):
    """Two named modules, two optimisers, EMA on G only, manual steps (a GAN's shape)."""

    name = "tinygan"
    summary = "test method: a 1-D GAN"
    Config = TinyGANConfig

    def build(self) -> Built:
        torch.manual_seed(0)
        g, d = nn.Linear(2, 1), nn.Sequential(nn.Linear(1, 8), nn.ReLU(), nn.Linear(8, 1))
        return Built({"G": g, "D": d}, {"G": torch.optim.Adam(g.parameters(), 1e-2),
                                        "D": torch.optim.Adam(d.parameters(), 1e-2)},
                     ema={"G": 0.9}, manual=True)

    def setup(self, trainer):
        self.g = trainer.generator("data")

    def step(self, trainer, step):
        G, D = trainer.modules["G"], trainer.modules["D"]
        z, real = torch.randn(16, 2, generator=self.g), torch.randn(16, 1, generator=self.g) + 2
        fake = G(z)
        loss_d = (nn.functional.softplus(D(fake.detach())).mean()
                  + nn.functional.softplus(-D(real)).mean())
        trainer.backward_step(loss_d, "D")
        loss_g = nn.functional.softplus(-D(fake)).mean()
        trainer.backward_step(loss_g, "G")
        return {"loss": (loss_d + loss_g).detach(), "loss_d": loss_d.detach()}


def test_two_module_manual_method_resumes_exactly_and_loads(tmp_path):
    """Built(modules, optimizers, ema, manual) reaches the trainer: a stopped and resumed run
    repeats the uninterrupted losses exactly, and load() rebuilds both modules (G's EMA on
    request)."""
    from dataclasses import replace

    from neural3d.methods import train_method

    register_method(TinyGAN)
    try:
        def cfg(out, resume="auto"):
            c = TinyGANConfig()
            return replace(c, train=replace(c.train, out_dir=str(out), resume=resume))

        full, _ = train_method(TinyGAN(cfg(tmp_path / "full")))
        train_method(TinyGAN(cfg(tmp_path / "part")), steps=3)
        part, _ = train_method(TinyGAN(cfg(tmp_path / "part")))
        assert [h["loss"] for h in part.history] == [h["loss"] for h in full.history]
        assert len(full.history) == 6
        ckpt = tmp_path / "full" / "checkpoints" / "last.pt"
        raw, averaged = neural3d.load(ckpt), neural3d.load(ckpt, ema=True)
        assert set(raw.modules) == {"G", "D"}
        assert torch.equal(raw.modules["G"].weight, full.raw["G"].weight)
        assert torch.equal(averaged.modules["G"].weight, full.emas["G"].module.weight)
        assert not torch.equal(raw.modules["G"].weight, averaged.modules["G"].weight)
        assert torch.equal(averaged.modules["D"][0].weight, full.raw["D"][0].weight)
    finally:
        registry.unregister_method(TinyGAN.name)


def test_public_api_is_lazy():
    import subprocess

    code = ("import sys, neural3d; assert 'torch' not in sys.modules, 'torch imported'\n"
            "from neural3d import Cameras, TriplaneField, VolumeRenderer, composite, load\n"
            "from neural3d.cameras import Cameras as C; assert Cameras is C\n"
            "print(VolumeRenderer.__name__, composite.__name__, load.__name__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["VolumeRenderer", "composite", "load"]
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        neural3d.nothing  # noqa: B018
