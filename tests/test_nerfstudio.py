"""nerfstudio plugin (neural3d.integrations.nerfstudio).

The first test runs everywhere (the plugin must import cleanly without nerfstudio); the rest need
``pip install neural3d[nerfstudio]`` and are skipped otherwise. The ``ns-train`` tests run
nerfstudio's real CLI in a subprocess on the CPU. When the installed ``neural3d`` distribution
does not declare the entry points yet, they register the plugin through nerfstudio's
``NERFSTUDIO_METHOD_CONFIGS`` / ``NERFSTUDIO_DATAPARSER_CONFIGS`` variables instead (and
``test_entry_points_registered`` is skipped, saying so).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
METHODS = {"neural3d-triplane": "neural3d.integrations.nerfstudio.methods:neural3d_triplane",
           "neural3d-hashgrid": "neural3d.integrations.nerfstudio.methods:neural3d_hashgrid"}
DATAPARSERS = {"neural3d-srn": "neural3d.integrations.nerfstudio.dataparser:neural3d_srn"}


def test_plugin_imports_without_nerfstudio(tmp_path):
    """With nerfstudio unimportable the package still imports, ``available()`` is False and
    using it raises ImportError with the install hint."""
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'nerfstudio':\n"
        "            raise ModuleNotFoundError('blocked for the test', name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import neural3d.integrations.nerfstudio as ns\n"
        "assert ns.available() is False\n"
        "for what in ('ns.Neural3DModel', 'ns.neural3d_srn',"
        " '__import__(\"neural3d.integrations.nerfstudio.methods\")'):\n"
        "    try:\n"
        "        eval(what)\n"
        "    except ImportError as e:\n"
        "        assert str(e).startswith(ns.MISSING_MESSAGE), e\n"
        "    else:\n"
        "        raise AssertionError(what + ' imported without nerfstudio')\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=tmp_path, timeout=120)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr[-2000:]


# ---------------------------------------------------------------- with nerfstudio installed
def _ns():
    pytest.importorskip("torchvision", reason="nerfstudio needs torchvision")
    return pytest.importorskip("nerfstudio", reason="nerfstudio not installed: "
                               "pip install neural3d[nerfstudio]")


def _registered(group: str) -> set[str]:
    return {ep.name for ep in entry_points(group=group)}


def _env() -> dict[str, str]:
    """Environment for nerfstudio subprocesses: our plugin registered (entry points, else
    nerfstudio's environment variables), CPU only, quiet, a per-venv kernel build folder."""
    env = dict(os.environ)
    if not set(METHODS) <= _registered("nerfstudio.method_configs"):
        env["NERFSTUDIO_METHOD_CONFIGS"] = ",".join(f"{k}={v}" for k, v in METHODS.items())
    if not set(DATAPARSERS) <= _registered("nerfstudio.dataparser_configs"):
        env["NERFSTUDIO_DATAPARSER_CONFIGS"] = ",".join(
            f"{k}={v}" for k, v in DATAPARSERS.items())
    env["CUDA_VISIBLE_DEVICES"] = ""
    # one thread: on a few shared cores, OpenMP threads spin against each other (10x slower)
    env["OMP_NUM_THREADS"] = "1"
    env.setdefault("NEURAL3D_BUILD_DIR", _build_dir())
    env["PYTHONWARNINGS"] = "ignore"
    return env


def _build_dir() -> str:
    # torch's JIT builds depend on the interpreter's include paths: a folder per environment
    # keeps two virtualenvs from rebuilding the C++ kernels over each other.
    tag = hashlib.sha1(sys.prefix.encode()).hexdigest()[:10]
    return str(Path.home() / ".cache" / "neural3d" / f"env-{tag}")


def _cpu_kernel_ready() -> bool:
    from neural3d.render import build

    old = os.environ.get("NEURAL3D_BUILD_DIR")
    os.environ["NEURAL3D_BUILD_DIR"] = _build_dir() if old is None else old
    try:
        return build.is_built("cpu")
    finally:
        if old is None:
            del os.environ["NEURAL3D_BUILD_DIR"]


def _ns_bin(name: str) -> str:
    exe = Path(sys.executable).parent / name
    found = str(exe) if exe.exists() else shutil.which(name)
    if not found:
        pytest.skip(f"{name} not found beside {sys.executable}")
    return found


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def toy_object(tmp_path_factory):
    _ns()  # skip before writing data
    from neural3d.data.toy import write_toy_dataset

    root = tmp_path_factory.mktemp("ns_toy")
    write_toy_dataset(root, "cars", objects=1, views=24, test_views=0, res=32, seed=3,
                      progress=False)
    return next((root / "cars_train").iterdir())


def test_entry_points_registered():
    _ns()
    methods, parsers = _registered("nerfstudio.method_configs"), _registered(
        "nerfstudio.dataparser_configs")
    if not (set(METHODS) <= methods and set(DATAPARSERS) <= parsers):
        pytest.skip("the installed neural3d does not declare the nerfstudio entry points yet "
                    "(pyproject.toml, see docs/nerfstudio.md); tests use nerfstudio's "
                    "NERFSTUDIO_*_CONFIGS variables instead")
    for group, wanted in (("nerfstudio.method_configs", METHODS),
                          ("nerfstudio.dataparser_configs", DATAPARSERS)):
        eps = {ep.name: ep for ep in entry_points(group=group)}
        for name, target in wanted.items():
            assert eps[name].value == target
    from nerfstudio.plugins.registry import discover_methods
    from nerfstudio.plugins.registry_dataparser import discover_dataparsers

    assert {"neural3d-triplane", "neural3d-hashgrid"} <= set(discover_methods()[0])
    assert "neural3d-srn" in discover_dataparsers()[0]


def test_dataparser_splits_and_cameras_round_trip(toy_object):
    _ns()
    from neural3d.cameras import from_nerfstudio
    from neural3d.data import read_object
    from neural3d.data.toy import TOY_AABB
    from neural3d.integrations.nerfstudio import SRNDataParserConfig

    ours = read_object(toy_object)
    parser = SRNDataParserConfig(data=toy_object).setup()
    train = parser.get_dataparser_outputs("train")
    val = parser.get_dataparser_outputs("val")
    test = parser.get_dataparser_outputs("test")
    assert len(train.image_filenames) == len(train.cameras) == 21  # 24 views, 0/8/16 held out
    assert len(val.image_filenames) == len(val.cameras) == 3
    assert [p.stem for p in test.image_filenames] == ["000000", "000008", "000016"]
    assert all(p.is_file() for p in train.image_filenames + val.image_filenames)
    assert torch.equal(train.alpha_color, torch.ones(3))
    assert torch.allclose(train.scene_box.aabb, torch.tensor(TOY_AABB, dtype=torch.float32))

    idx = [i for i in range(24) if i % 8]
    c = train.cameras
    back = from_nerfstudio(c.camera_to_worlds, c.fx[:, 0], c.fy[:, 0], c.cx[:, 0], c.cy[:, 0],
                           int(c.width[0, 0]), int(c.height[0, 0]))
    ref = ours.cameras[torch.tensor(idx)]
    assert torch.allclose(back.c2w, ref.c2w, atol=1e-6)
    for a in ("fx", "fy", "cx", "cy"):
        assert torch.allclose(getattr(back, a), getattr(ref, a))
    assert (back.width, back.height) == (ref.width, ref.height)
    # the rays nerfstudio generates are the rays our cameras generate
    rb = c.generate_rays(camera_indices=4, keep_shape=True)
    o, d = ref[4].pixel_rays()
    assert torch.allclose(rb.origins, o[0], atol=1e-5)
    assert torch.allclose(rb.directions, d[0], atol=1e-5)
    # and the images nerfstudio loads are the images our reader returns
    from nerfstudio.data.datasets.base_dataset import InputDataset

    img = InputDataset(train).get_image_float32(4)
    assert torch.allclose(img, ours.images[idx[4]], atol=1 / 255)


def test_dataparser_picks_objects_and_reports_bad_folders(toy_object, tmp_path):
    _ns()
    from neural3d.data import DataError
    from neural3d.integrations.nerfstudio import SRNDataParserConfig

    split = toy_object.parent
    for obj in ("", "0", toy_object.name):
        out = SRNDataParserConfig(data=split, object=obj).setup().get_dataparser_outputs("val")
        assert out.metadata["neural3d_object"] == toy_object.name
    box = (-1.0, -1.0, -1.0, 1.0, 1.0, 1.0)
    out = SRNDataParserConfig(data=toy_object, aabb=box, aabb_scale=0.5).setup() \
        .get_dataparser_outputs("train")
    assert torch.allclose(out.scene_box.aabb, torch.tensor(box).reshape(2, 3) * 0.5)
    with pytest.raises(DataError, match="no object 'nope'"):
        SRNDataParserConfig(data=split, object="nope").setup().get_dataparser_outputs("train")
    with pytest.raises(DataError, match=str(tmp_path)):
        SRNDataParserConfig(data=tmp_path).setup().get_dataparser_outputs("train")


@pytest.mark.parametrize("field_name", ["triplane", "hashgrid"])
def test_model_contract(toy_object, field_name):
    """Outputs, losses, metrics and the viewer's whole-camera path, in process."""
    _ns()
    from nerfstudio.data.datasets.base_dataset import InputDataset

    from neural3d.fields import HashGridFieldConfig, TriplaneFieldConfig
    from neural3d.integrations.nerfstudio import SRNDataParserConfig
    from neural3d.integrations.nerfstudio.methods import make_trainer_config
    from neural3d.integrations.nerfstudio.model import Neural3DModelConfig

    out = SRNDataParserConfig(data=toy_object).setup().get_dataparser_outputs("train")
    field = {"triplane": TriplaneFieldConfig(resolution=32),
             "hashgrid": HashGridFieldConfig(n_levels=4, log2_hashmap_size=12,
                                             max_resolution=64)}[field_name]
    cfg = Neural3DModelConfig(field=field, backend="torch", eval_num_rays_per_chunk=300,
                              grid_res=16, samples_per_ray=64)
    made = make_trainer_config(field_name).pipeline.model  # the plugin's defaults: fit's
    assert made.field == {"triplane": TriplaneFieldConfig(),
                          "hashgrid": HashGridFieldConfig()}[field_name]
    assert made.field.tv_weight == 1e-2 if field_name == "triplane" else True
    assert made.occupancy_grid and (made.grid_res, made.grid_every, made.grid_warmup,
                                    made.grid_alpha) == (64, 16, 128, 0.005)
    torch.manual_seed(0)
    model = cfg.setup(scene_box=out.scene_box, num_train_data=len(out.image_filenames),
                      metadata=out.metadata, device="cpu")
    groups = model.get_param_groups()
    assert set(groups) == {"fields", "planes"}
    n_params = sum(p.numel() for p in model.field.parameters())
    assert sum(p.numel() for g in groups.values() for p in g) == n_params

    cams = out.cameras
    rb = cams.generate_rays(camera_indices=0, keep_shape=True)  # [H, W]
    flat = rb.flatten()[:200]
    model.train()
    o = model(flat)
    assert o["rgb"].shape == (200, 3) and o["accumulation"].shape == (200, 1)
    assert o["depth"].shape == (200, 1)
    acc = o["accumulation"].detach()
    assert float(acc.min()) >= 0 and float(acc.max()) <= 1 + 1e-5
    gt = InputDataset(out).get_image_float32(0).reshape(-1, 3)[:200]
    batch = {"image": gt}
    losses = model.get_loss_dict(o, batch, model.get_metrics_dict(o, batch))
    assert "rgb_loss" in losses and all(torch.isfinite(v) for v in losses.values())
    assert ("tv_loss" in losses) == (field_name == "triplane")
    sum(losses.values()).backward()
    assert all(p.grad is not None for g in groups.values() for p in g)
    # RGBA ground truth is composited on the background
    rgba = torch.cat([gt, torch.zeros(200, 1)], -1)
    assert torch.allclose(model.gt_rgb(rgba), torch.ones(200, 3))
    # a collider's near/far clips the box bounds; a ray bundle with nears == fars sees nothing
    flat.nears = torch.full((200, 1), 5.0)
    flat.fars = torch.full((200, 1), 6.0)
    model.eval()
    with torch.no_grad():
        empty = model(flat)
    assert torch.allclose(empty["rgb"], torch.ones(200, 3))
    assert float(empty["accumulation"].abs().max()) == 0.0

    # the viewer / eval path: a whole camera in chunks
    image = model.get_outputs_for_camera_ray_bundle(rb)
    H, W = int(cams.height[0, 0]), int(cams.width[0, 0])
    assert image["rgb"].shape == (H, W, 3) and image["depth"].shape == (H, W, 1)
    full = {"image": InputDataset(out).get_image_float32(0)}
    metrics, images = model.get_image_metrics_and_images(image, full)
    assert set(metrics) >= {"psnr", "ssim"} and all(isinstance(v, float) for v in metrics.values())
    assert images["img"].shape == (H, 2 * W, 3)
    assert images["depth"].shape == (H, W, 3) and images["accumulation"].shape == (H, W, 3)
    assert model.get_rgba_image(image).shape == (H, W, 4)


def test_ns_train_help_lists_methods():
    _ns()
    res = subprocess.run([_ns_bin("ns-train"), "--help"], capture_output=True, text=True,
                         env=_env(), timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "neural3d-triplane" in res.stdout and "neural3d-hashgrid" in res.stdout


def test_ns_train_short_cpu_run_lowers_loss(toy_object, tmp_path):
    """A real ``ns-train neural3d-triplane`` run on the CPU: it finishes, saves a checkpoint
    (with a carved occupancy grid), and its logged training loss falls."""
    _ns()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    env = _env()
    if not _cpu_kernel_ready():  # do not spend the test's time compiling the C++ kernel
        env["NEURAL3D_BACKEND"] = "torch"
    steps = 150
    cmd = [_ns_bin("ns-train"), "neural3d-triplane", "--data", str(toy_object),
           "--output-dir", str(tmp_path), "--experiment-name", "toy",
           "--machine.device-type", "cpu", "--vis", "tensorboard",
           "--viewer.quit-on-train-completion", "True",
           "--max-num-iterations", str(steps), "--logging.steps-per-log", "10",
           "--steps-per-eval-batch", "0", "--steps-per-eval-image", "0",
           "--steps-per-eval-all-images", "0", "--steps-per-save", "1000",
           "--pipeline.datamanager.train-num-rays-per-batch", "256",
           "--pipeline.model.samples-per-ray", "96", "--pipeline.model.grid-res", "32",
           "--pipeline.model.grid-warmup", "32", "--pipeline.model.grid-every", "2",
           "neural3d-srn",
           "pipeline.model.field:triplane", "--pipeline.model.field.resolution", "64"]
    # no timeout: the first ns-train may JIT-build the compositing kernel
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    run = next((tmp_path / "toy" / "neural3d-triplane").iterdir())
    assert (run / "config.yml").is_file()
    assert list((run / "nerfstudio_models").glob("step-*.ckpt"))
    ev = EventAccumulator(str(next(run.glob("events.out.tfevents.*"))))
    ev.Reload()
    loss = [e.value for e in ev.Scalars("Train Loss Dict/rgb_loss")]
    assert len(loss) == steps // 10
    first, last = sum(loss[:3]) / 3, sum(loss[-3:]) / 3
    assert last < 0.6 * first, loss

    # the checkpoint loads with torch's safe loader (what ns-eval / ns-render / --load-dir use)
    ckpt = sorted((run / "nerfstudio_models").glob("step-*.ckpt"))[-1]
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert any(k.startswith("_model.field.") for k in state["pipeline"])
    # the occupancy grid was refreshed by the training callback: empty space carved away (the
    # density EMA starts at 1e3 and decays by 0.8 per refresh: ~40 refreshes before any carving)
    assert 0.0 < float(state["pipeline"]["_model.grid.occ"].float().mean()) < 0.9
    # held-out PSNR by nerfstudio's own evaluator beats rendering nothing (all background)
    out = tmp_path / "eval.json"
    res = subprocess.run([_ns_bin("ns-eval"), "--load-config", str(run / "config.yml"),
                          "--output-path", str(out)], capture_output=True, text=True, env=env,
                         cwd=tmp_path)
    assert res.returncode == 0, (res.stdout[-3000:], res.stderr[-3000:])
    import json

    from neural3d.data import read_object
    from neural3d.metrics import psnr

    held = read_object(toy_object).select([0, 8, 16]).images
    blank = float(psnr(torch.ones_like(held), held))
    got = json.loads(out.read_text())["results"]["psnr"]
    assert got > blank + 6.0, (got, blank)  # ~22 dB vs ~10 dB


def test_occupancy_grid_callback_follows_fit_schedule_and_carves_empty_space(toy_object):
    """The training callback refreshes the grid on fit's schedule; once the field is empty
    somewhere, those cells stop being sampled. ``occupancy_grid=False``: stratified samples."""
    _ns()
    from nerfstudio.engine.callbacks import TrainingCallbackAttributes, TrainingCallbackLocation

    from neural3d.fields import TriplaneFieldConfig
    from neural3d.integrations.nerfstudio import SRNDataParserConfig
    from neural3d.integrations.nerfstudio.model import Neural3DModelConfig

    out = SRNDataParserConfig(data=toy_object).setup().get_dataparser_outputs("train")
    cfg = Neural3DModelConfig(field=TriplaneFieldConfig(resolution=16), backend="torch",
                              grid_res=16, grid_every=4, grid_warmup=8, samples_per_ray=48)
    torch.manual_seed(0)
    model = cfg.setup(scene_box=out.scene_box, num_train_data=len(out.image_filenames),
                      metadata=out.metadata, device="cpu")
    attrs = TrainingCallbackAttributes(optimizers=None, grad_scaler=None, pipeline=None,
                                       trainer=None)
    callbacks = model.get_training_callbacks(attrs)
    assert len(callbacks) == 1

    def run(step):
        for cb in callbacks:
            cb.run_callback_at_location(step, TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)

    class Ball(torch.nn.Module):  # an empty field except a red ball of radius 0.2
        def forward(self, p, d=None):
            sigma = torch.where(p.norm(dim=-1) < 0.2, 50.0, 0.0)
            return sigma, torch.tensor([1.0, 0.0, 0.0]).expand(*p.shape[:-1], 3)

    model.field = Ball()
    rb = out.cameras.generate_rays(camera_indices=0, keep_shape=True).flatten()
    model.eval()
    with torch.no_grad():
        before = model.renderer(model.field, rb.origins, rb.directions, sampler=model.grid)
    for step in range(0, 8):  # before the warm-up: untouched
        run(step)
    assert bool(model.grid.occ.all())
    for step in range(8, 8 + 4 * 40):  # the EMA starts at 1e3 and decays by 0.8 per refresh
        run(step)
    occupied = float(model.grid.occ.float().mean())
    assert 0.0 < occupied < 0.25  # the ball, dilated by one cell
    with torch.no_grad():
        after = model.renderer(model.field, rb.origins, rb.directions, sampler=model.grid)
    assert after["samples"] < 0.2 * before["samples"]
    assert float((before["opacity"] > 0.5).float().mean()) > 0.01  # the ball is in view
    torch.testing.assert_close(after["rgb"], before["rgb"])
    # the grid is state: it is saved with the model
    assert {"grid.occ", "grid.density_ema"} <= set(model.state_dict())

    off = Neural3DModelConfig(field=TriplaneFieldConfig(resolution=16), backend="torch",
                              occupancy_grid=False).setup(
        scene_box=out.scene_box, num_train_data=1, metadata=out.metadata, device="cpu")
    assert off.grid is None and off.get_training_callbacks(attrs) == []
    with pytest.raises(ValueError, match="num_importance"):
        Neural3DModelConfig(num_importance=8).setup(
            scene_box=out.scene_box, num_train_data=1, metadata=out.metadata, device="cpu")


def test_camera_path_reads_the_same_in_nerfstudio(tmp_path):
    """A camera_path.json from our writer (neural3d view) gives nerfstudio's reader
    (``ns-render camera-path``) the cameras our reader gives ``neural3d render``."""
    import json

    _ns()
    from nerfstudio.cameras.camera_paths import get_path_from_json

    from neural3d.cameras import Cameras, look_at, to_nerfstudio
    from neural3d.viewer.camera_path import (
        CameraPath,
        interpolate,
        read_camera_path,
        write_camera_path,
    )

    eyes = torch.tensor([[1.3, 0.0, 0.5], [0.0, 1.3, 0.7], [-1.3, 0.2, 0.4]])
    keys = Cameras(look_at(eyes), 40.0, 40.0, 24.0, 16.0, 48, 32)
    file = write_camera_path(tmp_path / "camera_path.json",
                             CameraPath(interpolate(keys, 7), 1.0, keys))
    theirs = get_path_from_json(json.loads(file.read_text()))
    ours = to_nerfstudio(read_camera_path(file).cameras)
    torch.testing.assert_close(theirs.camera_to_worlds, ours["camera_to_worlds"], atol=1e-6,
                               rtol=0)
    for k in ("fx", "fy", "cx", "cy"):
        torch.testing.assert_close(getattr(theirs, k).float(), ours[k], atol=1e-4, rtol=0)
    assert (int(theirs.width[0]), int(theirs.height[0])) == (48, 32)
