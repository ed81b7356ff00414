"""NerfDiff: frustum coordinates, the CDM's stop-gradient, NGD's blend, fixed point and
determinism, train -> load -> reconstruct/eval/reconstruct CLI, errors on bad input."""

import dataclasses

import pytest
import torch

from neural3d.cameras import Cameras, orbit_path
from neural3d.fields.triplane import sample_triplane
from neural3d.methods.multiview import conditioned_batch, load_split, other_views
from neural3d.methods.nerfdiff import NerfDiffModel, distill, ngd_blend, tiny_config
from neural3d.methods.nerfdiff.frustum import align_planes, frustum_coords, pixel_of
from neural3d.methods.registry import MethodError, load


@pytest.fixture(autouse=True)
def _torch_backend(monkeypatch):
    monkeypatch.setenv("NEURAL3D_BACKEND", "torch")  # no kernel JIT in unit tests
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from neural3d.methods.nerfdiff import NerfDiff
    from neural3d.methods.training import train_method

    mp = pytest.MonkeyPatch()
    mp.setenv("NEURAL3D_BACKEND", "torch")
    root = tmp_path_factory.mktemp("nerfdiff")
    cfg = tiny_config(root / "data", root / "run", steps=4)
    cfg.cdm.start_step = 2
    train_method(NerfDiff(cfg))
    yield root
    mp.undo()


def _cams(n=3, res=16):
    return Cameras.srn(orbit_path(n, 1.3, 25.0), res)


def test_frustum_coords_map_a_point_back_to_its_pixel():
    cams = _cams()
    pts = torch.rand(3, 50, 3) - 0.5                       # inside the toy box
    coords = frustum_coords(cams, pts, 0.87)
    uv, z = cams.project(pts)
    assert torch.allclose(pixel_of(cams, coords), uv, atol=1e-4)
    assert coords[..., 2].abs().max() <= 1                 # the box lies in the depth range
    # the first plane is pixel-aligned: a point seen at the centre of pixel (i, j) reads
    # the encoder map's entry [j, i] exactly
    C, R = 2, 16
    maps = torch.randn(1, 3 * C, R, R)
    planes = align_planes(maps, C)
    i, j = 5, 11
    o, d = cams[0].pixel_rays()
    p = o[0, j, i] + 1.3 * d[0, j, i]                       # on the ray of pixel (i, j)
    c = frustum_coords(cams[0], p[None, None], 0.87)
    only_first = torch.cat([planes[:, :1], torch.zeros_like(planes[:, 1:])], 1)
    feat = sample_triplane(only_first, c, "sum")
    assert torch.allclose(feat[0, 0], maps[0, :C, j, i], atol=1e-5)
    # the third plane is the transposed map: its width axis runs along the image rows
    assert torch.equal(planes[0, 2], maps[0, 2 * C:].transpose(-1, -2))


def test_blend_equals_mixing_the_noise_predictions():
    g = torch.Generator().manual_seed(0)
    x_t, x0_cdm, x_nerf = (torch.randn(2, 3, 8, 8, generator=g) for _ in range(3))
    alpha, sigma = torch.tensor(0.6), torch.tensor(0.8)
    for gamma in (0.0, 0.3, 1.0):
        x0, eps = ngd_blend(x_t, x0_cdm, x_nerf, gamma, alpha, sigma)
        eps_cdm, eps_nerf = (x_t - alpha * x0_cdm) / sigma, (x_t - alpha * x_nerf) / sigma
        assert torch.allclose(eps, (1 - gamma) * eps_cdm + gamma * eps_nerf, atol=1e-5)
        assert torch.allclose(x_t, alpha * x0 + sigma * eps, atol=1e-5)


def _tiny_model(tmp_path):
    cfg = tiny_config(tmp_path / "data", tmp_path / "run")
    torch.manual_seed(0)
    model = NerfDiffModel(cfg)
    with torch.no_grad():   # a non-zero encoder output (its last conv starts at zero)
        for p in model.encoder.out.parameters():
            p.normal_(0, 0.05)
    return cfg, model


def test_cdm_sends_no_gradient_into_the_nerf(tmp_path):
    cfg, model = _tiny_model(tmp_path)
    data = load_split(cfg.data, "train")
    g = torch.Generator().manual_seed(0)
    b = conditioned_batch(data, 2, 16, g)
    tgt = data.offsets[b.objects] + other_views(data, b.objects, b.views, g)
    out = model(b.images, b.cameras, b.origins, b.directions, b.rgb,
                cdm_cams=data.cameras[tgt], cdm_targets=data.images[tgt].float() / 255,
                generator=g)
    nerf = [*model.encoder.parameters(), *model.field.parameters()]
    grads = torch.autograd.grad(out["cdm"], nerf + list(model.cdm.parameters()),
                                allow_unused=True)
    assert all(gr is None for gr in grads[:len(nerf)])
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads[len(nerf):])
    # while the rendering loss does reach the NeRF
    grads = torch.autograd.grad(out["render_mse"], nerf, allow_unused=True)
    assert any(gr is not None and gr.abs().sum() > 0 for gr in grads)


def _input(model, cfg):
    test = load_split(cfg.data, "test")
    images, cams = test.views(0)
    return images[:1], cams[0]


def test_ngd_with_gamma_one_and_an_identity_cdm_leaves_the_nerf_unchanged(tmp_path,
                                                                           monkeypatch):
    cfg, model = _tiny_model(tmp_path)
    model = model.double()
    image, cam = _input(model, cfg)
    cam = Cameras(cam.c2w.double(), cam.fx.double(), cam.fy.double(), cam.cx.double(),
                  cam.cy.double(), cam.width, cam.height)
    # the input view is the NeRF's own render of it (the planes predicted from the original
    # image), and the CDM returns its condition (the NeRF's render of the view) as the clean
    # image: nothing pulls the planes anywhere
    planes0 = model.encode(image.double()).detach()
    image = model.render_views(planes0, cam, cam)
    monkeypatch.setattr(model, "encode", lambda images: planes0)
    monkeypatch.setattr(model, "predict_x0", lambda x, t, cond, w=1.0: cond)
    ngd = dataclasses.replace(cfg.ngd, gamma=1.0, steps=3, finetune_steps=2)
    state = distill(model, image, cam, ngd, "ngd")
    assert (state.planes - planes0).abs().max() < 1e-6
    # control: the same run towards a grey CDM moves the planes
    monkeypatch.setattr(model, "predict_x0", lambda x, t, cond, w=1.0: torch.zeros_like(cond))
    moved = distill(model, image, cam, dataclasses.replace(ngd, gamma=0.0), "ngd")
    assert (moved.planes - planes0).abs().max() > 1e-3


def test_ngd_is_deterministic_for_a_seed(tmp_path):
    cfg, model = _tiny_model(tmp_path)
    image, cam = _input(model, cfg)
    for mode in ("ngd", "sds", "naive"):
        a = distill(model, image, cam, cfg.ngd, mode)
        b = distill(model, image, cam, cfg.ngd, mode)
        assert torch.equal(a.planes, b.planes), mode
        assert not torch.equal(a.planes, model.encode(image)), mode    # it did fine-tune
    other = distill(model, image, cam, dataclasses.replace(cfg.ngd, seed=1), "ngd")
    assert not torch.equal(other.planes, a.planes)


def test_train_load_reconstruct_every_mode(run):
    method = load(run / "run" / "checkpoints" / "last.pt")
    assert method.name == "nerfdiff" and method.checkpoint_step == 4
    test = load_split(method.cfg.data, "test")
    images, cams = test.views(0)
    for mode in ("nerf", "cdm", "naive", "sds", "ngd"):
        state = method.reconstruct(images[:1], cams[0], mode=mode, steps=2)
        out = method.render(state, cams[1:3])
        assert out.shape == (2, 16, 16, 3) and out.min() >= 0 and out.max() <= 1, mode
    with pytest.raises(MethodError, match="one input view"):
        method.reconstruct(images[:2], cams[torch.arange(2)])
    with pytest.raises(MethodError, match="trained on 16 px"):
        method.reconstruct(torch.zeros(1, 8, 8, 3), cams[0].scaled(8, 8))
    with pytest.raises(ValueError, match="unknown NerfDiff mode"):
        method.reconstruct(images[:1], cams[0], mode="magic")


def test_eval_nvs_and_reconstruct_cli(run, tmp_path, capsys):
    from neural3d.cli import main
    from neural3d.data import SRNCategory

    ckpt = str(run / "run" / "checkpoints" / "last.pt")
    assert main(["eval", "nvs", "--method", "nerfdiff", "--ckpt", ckpt, "--data",
                 str(run / "data"), "--input-views", "1", "--mode", "ngd", "--ngd-steps", "2",
                 "--no-fid", "--out", str(tmp_path / "nvs"), "--threads", "1"]) == 0
    import json

    res = json.loads((tmp_path / "nvs" / "results.json").read_text())
    assert res["num_objects"] == 2 and res["recon_options"]["mode"] == "ngd"
    assert 0 < res["mean"]["psnr"] < 60
    cat = SRNCategory(run / "data", "cars", "test")
    obj = run / "data" / "cars_test" / cat.object_ids[0]
    out = tmp_path / "rec"
    assert main(["reconstruct", "nerfdiff", ckpt, "--image", str(obj / "rgb" / "000002.png"),
                 "--pose", str(obj / "pose" / "000002.txt"), "--intrinsics",
                 str(obj / "intrinsics.txt"), "--out", str(out), "--frames", "3",
                 "--mesh-res", "16", "--level", "0.5", "--mode", "nerf", "--threads", "1"]) == 0
    for name in ("view.png", "turntable.mp4", "state.pt", "mesh.ply"):
        assert (out / name).is_file(), name


def test_a_nerf_only_run_continues_into_the_cdm_phase(tmp_path):
    """A NeRF trained alone (CDM phase out of reach, a time budget) resumes with the CDM phase
    starting at the step it reached: the CDM trains, the frozen NeRF stays as it was; any other
    change of the training config is still refused."""
    from neural3d.config import ConfigError
    from neural3d.methods.nerfdiff import NerfDiff
    from neural3d.methods.training import train_method

    def config(**kw):
        cfg = tiny_config(tmp_path / "data", tmp_path / "run", **kw)
        cfg.cdm.cached_pairs = 1
        return cfg

    first = config(steps=2, time_budget=600.0)
    first.cdm.start_step = 1000
    train_method(NerfDiff(first))
    before = load(tmp_path / "run" / "checkpoints" / "last.pt").model
    assert before.cfg.cdm.start_step == 1000

    second = config(steps=4, resume="auto")
    second.cdm.start_step = 2
    train_method(NerfDiff(second))
    after = load(tmp_path / "run" / "checkpoints" / "last.pt")
    assert after.checkpoint_step == 4
    for part in ("encoder", "field"):
        for p, q in zip(getattr(before, part).parameters(),
                        getattr(after.model, part).parameters(), strict=True):
            assert torch.equal(p, q), part
    assert any(not torch.equal(p, q) for p, q in zip(before.cdm.parameters(),
                                                      after.model.cdm.parameters(), strict=True))

    third = config(steps=6, resume="auto")
    third.cdm.start_step = 2
    third.optim.lr = 0.5
    with pytest.raises(ConfigError, match="optim.lr"):
        train_method(NerfDiff(third))


def test_bad_config_values_are_errors(tmp_path):
    from neural3d.config import ConfigError, load_config
    from neural3d.methods.nerfdiff import NerfDiffConfig

    with pytest.raises(ConfigError, match="ngd.gamma"):
        load_config(NerfDiffConfig, None, ["ngd.gamma=1.5"])
    with pytest.raises(ConfigError, match="cdm.schedul"):
        load_config(NerfDiffConfig, None, ["cdm.schedul=cosine"])


def test_residual_cdm_starts_at_the_render(tmp_path):
    """``cdm.residual``: the untrained CDM (zero output layer) predicts its condition's render
    as the clean view; it needs the x0 parameterisation."""
    from neural3d.config import ConfigError, validate

    cfg = tiny_config(tmp_path / "data", tmp_path / "run")
    cfg.cdm.residual, cfg.cdm.parameterization = True, "x0"
    model = NerfDiffModel(cfg)
    cond = torch.rand(2, 3, 16, 16) * 2 - 1
    x_t = torch.randn(2, 3, 16, 16)
    assert torch.allclose(model.predict_x0(x_t, 0.5, cond), cond)
    assert torch.equal(model.predict_x0(x_t, 0.5, None), torch.zeros_like(cond))
    cfg.cdm.parameterization = "v"
    with pytest.raises(ConfigError, match="cdm.residual"):
        validate(cfg)


def test_input_colour_channels_read_the_observed_pixel(tmp_path):
    """With model.input_colour, a point on the input camera's ray through pixel (i, j) reads
    that pixel's RGB in the 3 extra channels of the summed plane features."""
    cfg = tiny_config(tmp_path / "d", tmp_path / "r")
    cfg.model = dataclasses.replace(cfg.model, input_colour=True)
    model = NerfDiffModel(cfg)
    R = model.res
    cams = _cams(1, R)
    images = torch.rand(1, R, R, 3)
    planes = model.encode(images)
    C = cfg.model.plane_channels
    assert planes.shape == (1, 3, C + 3, R, R) and model.field.channels == C + 3
    assert torch.equal(planes[:, 1:, C:], torch.zeros_like(planes[:, 1:, C:]))
    o, d = cams[0].pixel_rays()
    for i, j in ((3, 7), (R - 1, 0)):
        for depth in (1.0, 1.3, 1.6):
            p = o[0, j, i] + depth * d[0, j, i]
            c = frustum_coords(cams[0], p[None, None], cfg.model.depth_radius)
            colour = sample_triplane(planes[:, :, C:], c, "sum")[0, 0]
            assert torch.allclose(colour, images[0, j, i], atol=1e-5)


def test_decoder_coords_widen_the_decoder_input(tmp_path):
    """``model.decoder_coords = n``: the decoder reads the summed plane features and the
    positional encoding (n frequencies) of the point's frustum coordinates."""
    cfg = tiny_config(tmp_path / "d", tmp_path / "r")
    cfg.model = dataclasses.replace(cfg.model, decoder_coords=3)
    model = NerfDiffModel(cfg)
    assert model.field.decoder.net[0].in_features == cfg.model.plane_channels + 3 * (1 + 2 * 3)
    cams = _cams(1, model.res)
    o, d = cams[0].pixel_rays()
    planes = torch.ones(1, 3, cfg.model.plane_channels, model.res, model.res)
    pts = o[0, 4, 5] + torch.tensor([1.0, 1.4])[:, None] * d[0, 4, 5]  # one ray, two depths
    density = model._field(planes, cams[:1])(pts[None], None)[0]
    assert (density[0, 0] - density[0, 1]).abs() > 0
