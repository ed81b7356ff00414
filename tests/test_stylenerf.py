"""StyleNeRF / EG3D-style GANs (neural3d.methods.stylenerf): the modulated convolution, the R1
penalty, the NeRF-path regulariser, a learning signal, exact resume and the CLI end to end."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import neural3d
from neural3d.cli import main
from neural3d.config import ConfigError, load_config
from neural3d.methods import train_method
from neural3d.methods.stylenerf.config import StyleNeRFConfig, tiny_config
from neural3d.methods.stylenerf.generator import Generator, nerf_path_error
from neural3d.methods.stylenerf.layers import StyleLayer, modulated_conv2d, upsample2x
from neural3d.methods.stylenerf.losses import lazy_adam, r1_penalty
from neural3d.methods.stylenerf.method import StyleNeRF
from neural3d.methods.stylenerf.nerf import UpBlock

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """Tiny toy cars (written once: 4 train cars x 4 views, 2 test cars x 6 views, 16 px)."""
    from neural3d.data.toy import write_toy_dataset

    root = tmp_path_factory.mktemp("toy")
    write_toy_dataset(root, "cars", objects=4, views=4, test_views=6, res=16, seed=0,
                      test_objects=2, progress=False)
    return root


# ----------------------------------------------------------------------------- layers
def test_modulated_conv_equals_explicit_per_sample_weights():
    g = torch.Generator().manual_seed(0)
    x, weight = torch.randn(3, 5, 6, 6, generator=g), torch.randn(4, 5, 3, 3, generator=g)
    styles = torch.rand(3, 5, generator=g) + 0.5
    for demod in (True, False):
        out = modulated_conv2d(x, weight, styles, demod, padding=1)
        for b in range(3):
            w = torch.empty_like(weight)
            for o in range(4):
                for i in range(5):
                    w[o, i] = weight[o, i] * styles[b, i]
                if demod:
                    w[o] = w[o] / torch.sqrt((w[o] ** 2).sum() + 1e-8)
            ref = F.conv2d(x[b:b + 1], w, padding=1)
            torch.testing.assert_close(out[b:b + 1], ref, rtol=1e-5, atol=1e-5)
    # StyleGAN2's non-fused form: scale the input, convolve, scale the output
    d = ((weight[None] * styles[:, None, :, None, None]) ** 2).sum([2, 3, 4]).add(1e-8).rsqrt()
    ref = F.conv2d(x * styles[:, :, None, None], weight, padding=1) * d[:, :, None, None]
    torch.testing.assert_close(modulated_conv2d(x, weight, styles, True, 1), ref, rtol=1e-5,
                               atol=1e-5)


def test_style_layer_on_points_equals_the_1x1_conv_on_images():
    torch.manual_seed(0)
    layer = StyleLayer(5, 4, w_dim=3)
    x, w = torch.randn(2, 5, 3, 3), torch.randn(2, 3)
    img = layer(x, w)
    pts = layer(x.flatten(2).transpose(1, 2), w)                    # [B, 9, 5]
    torch.testing.assert_close(pts, img.flatten(2).transpose(1, 2), rtol=1e-5, atol=1e-6)


def test_upsample2x_is_the_1331_filter_with_zero_insertion():
    x = torch.randn(2, 3, 5, 4, generator=torch.Generator().manual_seed(1))
    xp = F.pad(x, (1, 1, 1, 1), mode="replicate")                  # replicate the edges
    z = torch.zeros(2, 3, 14, 12)
    z[..., ::2, ::2] = xp
    f = torch.tensor([1.0, 3.0, 3.0, 1.0])
    k = (f[:, None] * f[None]) / 64 * 4                             # gain 4 for 2x up
    ref = F.conv2d(z, k.expand(3, 1, 4, 4), groups=3)[..., :10, :8]
    torch.testing.assert_close(upsample2x(x), ref, rtol=1e-5, atol=1e-6)


def test_up_block_pixel_path_matches_the_image_path_subpixel_by_subpixel():
    """On a constant feature map the 2x filter is the identity, so every output pixel of the
    image path equals the point path at that pixel's sub-pixel (pixel-shuffle order)."""
    torch.manual_seed(0)
    blk = UpBlock(8, 6, w_dim=4)
    B = 2
    feat, rgb = torch.randn(B, 8), torch.randn(B, 3)
    w0, w1 = torch.randn(B, 4), torch.randn(B, 4)
    x, img = blk(feat[:, :, None, None].expand(B, 8, 3, 3), rgb[:, :, None, None].expand(
        B, 3, 3, 3), w0, w1)
    for row in range(6):
        for col in range(6):
            sub = torch.full((B, 1), (row % 2) * 2 + col % 2)
            px, pimg = blk.pixel(feat[:, None], rgb[:, None], sub, w0, w1)
            torch.testing.assert_close(px[:, 0], x[:, :, row, col], rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(pimg[:, 0], img[:, :, row, col], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------- losses
def test_r1_penalty_against_autograd_on_a_tiny_discriminator():
    g = torch.Generator().manual_seed(0)
    lin = nn.Linear(12, 1)
    x = torch.randn(5, 3, 2, 2, generator=g)

    def D(v):
        return lin(v.flatten(1))[:, 0]

    r1 = r1_penalty(D, x)                       # linear D: grad_x = w for every sample
    torch.testing.assert_close(r1, lin.weight.square().sum().expand(5))
    r1.mean().backward()                        # d/dw ||w||^2 = 2 w: the penalty trains D
    torch.testing.assert_close(lin.weight.grad, 2 * lin.weight.detach())

    mlp = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.Tanh(), nn.Linear(8, 1))
    ref = torch.func.vmap(torch.func.grad(lambda v: mlp(v[None])[0, 0]))(x)
    torch.testing.assert_close(r1_penalty(lambda v: mlp(v)[:, 0], x),
                               ref.square().flatten(1).sum(1))


def test_lazy_regularisation_rescales_adam():
    lr, betas = lazy_adam(0.0025, [0.0, 0.99], 16)
    c = 16 / 17
    assert lr == pytest.approx(0.0025 * c) and betas == (0.0, pytest.approx(0.99 ** c))
    assert lazy_adam(0.002, [0.0, 0.99], 0) == (0.002, (0.0, 0.99))


# ----------------------------------------------------------------------------- regulariser
def _tiny_generator(**gen):
    cfg = tiny_config("unused", "unused")
    cfg = replace(cfg, generator=replace(cfg.generator, **gen))
    torch.manual_seed(0)
    return Generator(cfg.mapping, cfg.generator).eval(), cfg


def test_nerf_path_regulariser_is_zero_for_the_identity_upsampler():
    """Level 0 (no upsampler block: the image is the NeRF's own render) with deterministic
    samples: the NeRF path at the grid pixels is exactly the image there."""
    from neural3d.methods.stylenerf.camera import CameraPrior

    G, cfg = _tiny_generator(render_res=8, output_res=16, channels=[8])
    cams = CameraPrior(cfg.camera).sample(2, 8, torch.Generator().manual_seed(0))
    ws = G.mapping(torch.randn(2, cfg.mapping.z_dim))
    with torch.no_grad():
        out = G.synthesis(ws, cams, 0)
        g = torch.Generator().manual_seed(3)
        err = nerf_path_error(G.synthesis, ws, cams, out["image"], 0, 1.0, 4, g)
        assert out["image"].shape[-1] == 8 and err.shape == (2,)
        assert err.max() < 1e-10
        # with a learned upsampler level the two paths differ (the test is not vacuous)
        up = G.synthesis(ws, cams, 1)
        assert nerf_path_error(G.synthesis, ws, cams, up["image"], 1, 1.0, 4, g).min() > 1e-6


# ----------------------------------------------------------------------------- training
def test_training_teaches_g_to_fool_d(data_root, tmp_path):
    """The learning signal: after 40 steps the final discriminator scores the final generator's
    fakes higher than the initial generator's (mean logit, and as a rank statistic: a random
    new fake beats a random old one in most pairs), so G's updates moved its fakes towards
    what D takes for real. (D's 0-threshold accuracy on fakes saturates near 95% for both at
    this size in 40 steps, so it is not the statistic.) Deterministic: seeded, one thread."""
    cfg = tiny_config(data_root, tmp_path / "run", steps=40)
    cfg = replace(cfg, progressive=replace(cfg.progressive, enabled=False))
    g0 = StyleNeRF(cfg).build().modules["G"]
    trainer, _ = train_method(StyleNeRF(cfg))
    G1, D = trainer.raw["G"], trainer.raw["D"]
    from neural3d.methods.stylenerf.camera import CameraPrior

    g = torch.Generator().manual_seed(123)
    z = torch.randn(64, cfg.mapping.z_dim, generator=g)
    cams = CameraPrior(cfg.camera).sample(64, 16, g)
    with torch.no_grad():
        old, new = (D(G.d_input(G.eval()(z, cams))) for G in (g0, G1))
    assert new.mean() > old.mean() + 0.1, (float(old.mean()), float(new.mean()))
    assert (new[:, None] > old[None, :]).float().mean() > 0.6


@pytest.mark.parametrize("generator", ["stylenerf", "eg3d"])
def test_exact_resume_with_both_optimisers(data_root, tmp_path, generator):
    """A run stopped at step 3 and resumed repeats the uninterrupted losses exactly (lazy R1
    every 2 steps, progressive growing through its fade, style mixing, the regulariser)."""
    def cfg(out):
        return tiny_config(data_root, out, generator, steps=6, ckpt_every=3)

    full, _ = train_method(StyleNeRF(cfg(tmp_path / "full")))
    train_method(StyleNeRF(cfg(tmp_path / "part")), steps=3)
    part, _ = train_method(StyleNeRF(cfg(tmp_path / "part")))
    assert [h["loss"] for h in part.history] == [h["loss"] for h in full.history]
    assert [h["loss_d"] for h in part.history] == [h["loss_d"] for h in full.history]
    assert any("r1" in h for h in full.history)
    if generator == "stylenerf":
        assert any(0 < h["alpha"] < 1 for h in full.history)   # a fade was crossed
        assert any("nerf_path" in h for h in full.history)
    for name in ("G", "D"):
        for a, b in zip(full.raw[name].state_dict().values(),
                        part.raw[name].state_dict().values(), strict=True):
            assert torch.equal(a, b)
    assert set(full.optimizers) == {"G", "D"}


def test_train_sample_eval_through_the_cli(data_root, tmp_path, capsys):
    run = tmp_path / "run"
    tiny = [f"data.root={data_root}", "data.toy=false", "generator.output_res=16",
            "generator.render_res=4", "generator.n_samples=4", "generator.n_importance=2",
            "generator.nerf_hidden=8", "generator.nerf_layers=1", "generator.features=4",
            "generator.channels=[8,4]", "generator.n_freqs=2", "mapping.z_dim=8",
            "mapping.w_dim=8", "mapping.layers=1", "discriminator.channel_max=8",
            "optim.batch=4", "progressive.start=0", "progressive.end=2",
            f"train.out_dir={run}", "train.steps=2", "train.progress=false",
            "train.tensorboard=false"]
    assert main(["train", "stylenerf", "--config", "configs/stylenerf_toycars.yaml",
                 "--threads", "1", *tiny]) == 0
    ckpt = run / "checkpoints" / "last.pt"
    assert f"checkpoint: {ckpt}" in capsys.readouterr().out
    loaded = neural3d.load(ckpt)
    assert isinstance(loaded, StyleNeRF) and loaded.cfg.generator.output_res == 16
    out = tmp_path / "samples"
    assert main(["sample", "stylenerf", str(ckpt), "--num", "2", "--frames", "4",
                 "--out", str(out), "--threads", "1"]) == 0
    printed = capsys.readouterr().out
    for name in ("grid.png", "depth.png", "ws.pt"):
        assert str(out / name) in printed and (out / name).is_file()
    assert len(list(out.glob("turntable_00[01].*"))) == 2
    assert torch.load(out / "ws.pt").shape == (2, loaded.generator.synthesis.num_ws, 8)
    views = loaded.render(loaded.sample(1)[0], __import__("neural3d").data.SRNCategory(
        data_root, "cars", "test").read("car_test_00000").cameras[torch.arange(2)])
    assert views.shape == (2, 16, 16, 3) and 0 <= views.min() and views.max() <= 1
    # a camera path (as neural3d view writes it) of sample 1 of 2, in a wide window: the
    # square renders cropped (viewer.scene.Scene)
    from neural3d.viewer.camera_path import CameraPath, write_camera_path
    from neural3d.viewer.scene import Scene

    home = loaded.home_camera()
    wide = neural3d.Cameras(home.c2w, home.fx, home.fy, 12.0, 8.0, 24, 16)
    file = write_camera_path(tmp_path / "camera_path.json", CameraPath(wide, 1.0))
    assert main(["render", str(ckpt), "--camera-path", str(file), "--samples", "2",
                 "--sample", "1", "--out", str(tmp_path / "frames"), "--threads", "1"]) == 0
    import imageio.v2 as iio

    from neural3d.export.media import to_uint8

    frame = iio.imread(tmp_path / "frames" / "frame_0000.png")
    scene = Scene(loaded, 2)
    assert frame.shape == (16, 24, 3)
    assert np.abs(frame.astype(int) - to_uint8(scene.render(wide, 1)[0])).max() <= 1
    assert not np.array_equal(to_uint8(scene.render(wide, 0)[0]), frame)
    assert main(["eval", "generation", "--method", "stylenerf", "--ckpt", str(ckpt), "--data",
                 str(data_root), "--num", "2", "--poses-per-sample", "2", "--out",
                 str(tmp_path / "gen"), "--threads", "1"]) == 0
    res = json.loads((tmp_path / "gen" / "results.json").read_text())
    assert res["method"] == "stylenerf" and res["num_images"] == 4
    assert res["method_info"]["generator"] == "stylenerf"


# ----------------------------------------------------------------------------- config, data
def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="progressive.enabled"):
        load_config(StyleNeRFConfig, "configs/eg3d_toycars.yaml", ["progressive.enabled=true"])
    with pytest.raises(ConfigError, match="render_res"):
        load_config(StyleNeRFConfig, None, ["generator.output_res=48"])
    with pytest.raises(ConfigError, match="of kind 'stylenerf'"):
        load_config(StyleNeRFConfig, None, ["generator.plane_res=8"])
    cfg = load_config(StyleNeRFConfig, "configs/eg3d_toycars.yaml")
    assert cfg.generator.kind == "eg3d" and cfg.generator.levels == 1


def test_image_folder_reads_crops_resizes_and_names_bad_files(tmp_path):
    import numpy as np
    from PIL import Image

    from neural3d.data import DataError, ImageFolder

    (tmp_path / "sub").mkdir()
    Image.fromarray(np.full((20, 30, 3), 255, np.uint8)).save(tmp_path / "a.png")
    arr = np.zeros((8, 8, 3), np.uint8)
    arr[:4] = 255
    Image.fromarray(arr).save(tmp_path / "sub" / "b.jpg", quality=100)
    ds = ImageFolder(tmp_path, 4)
    imgs = ds.load()
    assert len(ds) == 2 and imgs.shape == (2, 4, 4, 3)
    assert torch.allclose(imgs[0], torch.ones(4, 4, 3))           # 20x30 cropped to 20x20
    assert imgs[1, 0].mean() > 0.9 and imgs[1, -1].mean() < 0.1
    (tmp_path / "c.png").write_bytes(b"not an image")
    with pytest.raises(DataError, match="c.png"):
        ImageFolder(tmp_path, 4).load()
    with pytest.raises(DataError, match="no images"):
        (tmp_path / "empty").mkdir()
        ImageFolder(tmp_path / "empty", 4)
