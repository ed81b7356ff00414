"""pixelNeRF-lite: projection into the input view, training through the method layer,
checkpoint round trip, reconstruct + render, `neural3d eval nvs`, config errors."""

import json

import pytest
import torch

import neural3d
from neural3d.cameras import Cameras, look_at, rays_for_pixels
from neural3d.config import ConfigError, load_config, validate
from neural3d.methods import train_method
from neural3d.methods.pixelnerf import PixelNeRF, PixelNeRFConfig, PixelNeRFModel, tiny_config
from neural3d.methods.pixelnerf.model import Encoded, camera_tensors


@pytest.fixture(autouse=True)
def _torch_backend(monkeypatch):
    monkeypatch.setenv("NEURAL3D_BACKEND", "torch")  # no kernel JIT in unit tests
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A 6-step tiny run: (data root, checkpoint path, trainer)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("NEURAL3D_BACKEND", "torch")
    root = tmp_path_factory.mktemp("pixelnerf")
    trainer, _ = train_method(PixelNeRF(tiny_config(root / "data", root / "run", steps=6)))
    yield root / "data", root / "run" / "checkpoints" / "last.pt", trainer
    mp.undo()


def _state(cams: Cameras, features: torch.Tensor) -> Encoded:
    w2c, intr = camera_tensors(cams)
    return Encoded(features[None], w2c[None], intr[None], (cams.width, cams.height))


def test_point_projects_onto_its_pixel_and_samples_that_feature():
    cams = Cameras.srn(look_at([[1.1, -0.4, 0.6]]), res=16)
    feats = torch.randn(1, 5, 8, 8)   # the H/2 x W/2 feature map of a 16 px view
    state = _state(cams, feats)
    rows, cols = torch.tensor([0, 3, 7, 5]), torch.tensor([2, 6, 0, 7])
    # feature texel (r, c) covers image pixels [2c, 2c+2) x [2r, 2r+2): centre (2c+1, 2r+1)
    o, d = rays_for_pixels(cams, torch.zeros(4), 2 * cols + 1.0, 2 * rows + 1.0)
    pts = o + d * torch.tensor([0.9, 1.2, 1.5, 1.8])[:, None]
    xyz, uv = PixelNeRFModel.project(state, pts[None])
    assert torch.allclose(uv[0, 0], torch.stack([2 * cols + 1.0, 2 * rows + 1.0], -1),
                          atol=1e-4)
    ref, _ = cams.project(pts)
    assert torch.allclose(uv[0, 0], ref[0], atol=1e-4)
    assert torch.allclose(xyz[0, 0].norm(dim=-1), (pts - o).norm(dim=-1), atol=1e-5)
    sampled = PixelNeRFModel.sample_features(state.features, state.size, uv)[0, 0]
    assert torch.allclose(sampled, feats[0][:, rows, cols].T, atol=1e-5)


def test_views_are_averaged_at_the_combine_layer(tmp_path):
    cfg = tiny_config(tmp_path, tmp_path)
    torch.manual_seed(0)
    model = PixelNeRFModel(cfg).eval()
    for p in model.parameters():     # fc1 starts at zero: make every block count
        p.data.add_(0.1 * torch.randn_like(p))
    cams = Cameras.srn(look_at([[1.3, 0.0, 0.3], [0.0, 1.3, 0.3]]), res=16)
    images = torch.rand(2, 16, 16, 3)
    both = model.encode_views(images, cams)
    pts = torch.rand(1, 7, 3) - 0.5
    dirs = torch.nn.functional.normalize(torch.randn(1, 7, 3), dim=-1)
    one = model.encode_views(images[:1], cams[0])
    with torch.no_grad():
        sig2, rgb2 = model.query(both, pts, dirs, model.coarse)
        sig1, rgb1 = model.query(one, pts, dirs, model.coarse)
        # by hand: blocks before combine_layer per view, then the mean of the views
        xyz, uv = model.project(both, pts)
        d_cam = torch.einsum("bvij,bpj->bvpi", both.w2c[..., :3, :3], dirs)
        x = torch.cat([model.pos_enc(xyz * (model.freq_factor / torch.pi)), d_cam], -1)
        z = model.sample_features(both.features, both.size, uv)   # lin_z after sampling
        net = model.coarse
        h = net.lin_in(x) + net.lin_z(z)
        h = net.blocks[0](h).mean(1, keepdim=True)
        h = net.blocks[1](h)
        raw = net.lin_out(torch.relu(h))[:, 0]
    assert torch.allclose(rgb2, torch.sigmoid(raw[..., :3]), atol=1e-5)
    assert torch.allclose(sig2, torch.relu(raw[..., 3]), atol=1e-5)
    assert not torch.allclose(rgb1, rgb2)


def test_training_runs_checkpoints_and_reloads_identically(run, tmp_path):
    data, ckpt, trainer = run
    assert ckpt.is_file() and trainer.step == 6
    hist = trainer.history
    assert all(torch.isfinite(torch.tensor(h["loss"])) for h in hist)
    assert {"loss", "psnr", "psnr_coarse"} <= set(hist[-1])
    method = neural3d.load(ckpt)
    assert isinstance(method, PixelNeRF) and method.checkpoint_step == 6
    for (k, p), q in zip(trainer.module.state_dict().items(),
                         method.model.state_dict().values(), strict=True):
        assert torch.equal(p, q), k
    from neural3d.methods.multiview import load_split

    test = load_split(method.cfg.data, "test")
    images, cams = test.views(0)
    state = method.reconstruct(images[:1], cams[0])
    assert state.features.shape == (1, 1, 16, 8, 8)
    out = method.render(state, cams[torch.tensor([1, 2, 3])])
    assert out.shape == (3, 16, 16, 3) and out.device.type == "cpu"
    assert 0 <= float(out.min()) and float(out.max()) <= 1
    trainer.module.eval()
    again = PixelNeRF._render(trainer.module, state, cams[torch.tensor([1, 2, 3])]).cpu()
    assert torch.equal(out, again)
    two = method.reconstruct(images[:2], cams[torch.tensor([0, 1])])
    assert two.features.shape == (1, 2, 16, 8, 8)
    assert method.render(two, cams[torch.tensor([4])]).shape == (1, 16, 16, 3)
    with pytest.raises(ValueError, match="V cameras"):
        method.reconstruct(images[:2], cams[0])
    assert len(method.home_camera()) == 1 and method.category == "cars"


def test_loss_decreases_on_one_batch(tmp_path):
    """A few steps on one fixed batch lower its loss (the gradient reaches every part)."""
    from neural3d.methods.multiview import conditioned_batch, load_split

    cfg = tiny_config(tmp_path / "data", tmp_path / "run")
    torch.manual_seed(0)
    model = PixelNeRFModel(cfg)
    b = conditioned_batch(load_split(cfg.data, "train"), 2, 64, torch.Generator().manual_seed(0))
    w2c, intr = camera_tensors(b.cameras)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for i in range(30):
        parts = model(b.images, w2c, intr, b.origins, b.directions, b.rgb,
                      torch.Generator().manual_seed(i))
        loss = parts["mse"] + parts["mse_coarse"]
        opt.zero_grad()
        loss.backward()
        if i == 0:
            for name in ("encoder", "coarse", "fine"):
                assert any(p.grad is not None and p.grad.abs().sum() > 0
                           for p in getattr(model, name).parameters()), name
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.7 * losses[0], losses


def test_eval_nvs_cli(run, tmp_path, capsys):
    from neural3d.cli import main

    data, ckpt, _ = run
    out = tmp_path / "nvs"
    assert main(["eval", "nvs", "--method", "pixelnerf", "--ckpt", str(ckpt), "--data",
                 str(data), "--input-views", "1", "--no-fid", "--out", str(out)]) == 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["num_objects"] == 2 and saved["input_views"] == [1]
    assert saved["num_images"] == 2 * 5 and 0 < saved["mean"]["psnr"] < 60
    assert "PSNR" in capsys.readouterr().out


def test_bad_config_values_raise(tmp_path):
    cfg = tiny_config(tmp_path, tmp_path)
    for section, key, value, match in [
            ("model", "combine_layer", 5, "model.combine_layer"),
            ("model", "density_activation", "exp", "model.density_activation"),
            ("model", "aabb", [0, 0, 0, 1, 1], "model.aabb"),
            ("model", "encoder_channels", [], "model.encoder_channels"),
            ("model", "n_samples", 0, "model.n_samples"),
            ("loss", "rays_per_object", 0, "loss.rays_per_object"),
            ("optim", "lr", 0.0, "optim.lr")]:
        bad = tiny_config(tmp_path, tmp_path)
        setattr(getattr(bad, section), key, value)
        with pytest.raises(ConfigError, match=match):
            validate(bad)
    validate(cfg)
    yaml = tmp_path / "c.yaml"
    yaml.write_text("model: {mlp_hiden: 8}\n")
    with pytest.raises(ConfigError, match="mlp_hidden"):
        load_config(PixelNeRFConfig, yaml)


def test_shipped_configs_load():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent / "configs"
    toy = load_config(PixelNeRFConfig, root / "pixelnerf_toycars.yaml")
    assert toy.data.toy_res == 64 and toy.data.root == "outputs/data/toy_nerfdiff"
    srn = load_config(PixelNeRFConfig, root / "pixelnerf_srn_cars.yaml")
    assert srn.model.mlp_hidden == 512 and srn.model.mlp_blocks == 5
