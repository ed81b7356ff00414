"""The web viewer: viewer-camera conversion, nerfstudio camera paths (write, read, interpolate,
render with ``neural3d render --camera-path``), the scene adapter, and the page itself in
headless Chromium (skipped with the reason when Chromium, playwright or viser is missing)."""

import json
import math
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from neural3d.cameras import Cameras, look_at, opencv_to_opengl
from neural3d.cli import main
from neural3d.data import DataError
from neural3d.viewer.camera import matrix_to_quat, quat_to_matrix, viewer_cameras, viewer_pose
from neural3d.viewer.camera_path import (
    CameraPath,
    interpolate,
    read_camera_path,
    unused_path,
    write_camera_path,
)

pytestmark = pytest.mark.usefixtures("one_thread")
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny fit of one toy car (32 px)."""
    from neural3d.data.toy import write_toy_dataset

    root = tmp_path_factory.mktemp("toy")
    write_toy_dataset(root, "cars", objects=1, views=12, test_views=0, res=32, seed=0,
                      progress=False)
    out = tmp_path_factory.mktemp("fit")
    assert main(["fit", "--data", str(root / "cars_train" / "car_train_00000"), "--steps",
                 "40", "--out", str(out), "--quiet", "rays=512", "turntable_frames=0",
                 "grid_warmup=16", "grid_every=8", "ckpt_every=0", "grid_res=32"]) == 0
    return out / "checkpoints" / "last.pt"


def orbit_keyframes(n=4, height=24, width=32, fov_deg=50.0):
    az = torch.arange(n) * 2 * math.pi / n
    eye = torch.stack([1.3 * torch.cos(az), 1.3 * torch.sin(az), torch.full_like(az, 0.5)], -1)
    f = 0.5 * height / math.tan(math.radians(fov_deg) / 2)   # a vertical fov of fov_deg
    return Cameras(look_at(eye), f, f, width / 2, height / 2, width, height)


# ----------------------------------------------------------------------------- cameras
def test_quaternion_round_trip():
    rng = np.random.default_rng(0)
    qs = list(rng.normal(size=(20, 4))) + [[0, 1, 0, 0], [0, 0, 0, 1], [0, 0.6, 0.8, 0]]
    for q in qs:
        q = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
        R = quat_to_matrix(q)
        assert np.allclose(R @ R.T, np.eye(3), atol=1e-12) and np.isclose(np.linalg.det(R), 1)
        q2 = matrix_to_quat(R)
        assert np.allclose(q2, q if q[0] >= 0 else -q, atol=1e-9)


def test_viewer_camera_round_trip_and_target_at_centre():
    target = torch.tensor([0.1, -0.2, 0.05])
    eyes = torch.tensor([[1.2, 0.3, 0.7], [-0.4, 1.1, -0.2], [0.0, 0.01, 1.5]])
    cams = Cameras.from_fov(look_at(eyes, target), 60.0, 160, 120)
    for i in range(len(cams)):
        pos, wxyz, fov, aspect = viewer_pose(cams, i)
        assert aspect == pytest.approx(160 / 120)
        assert fov == pytest.approx(2 * math.atan(60 / float(cams.fy[i])))
        back = viewer_cameras(pos, wxyz, fov, aspect, 120)
        assert (back.width, back.height) == (160, 120)
        torch.testing.assert_close(back.c2w[0], cams.c2w[i], atol=1e-6, rtol=0)
        for k in ("fx", "fy", "cx", "cy"):
            torch.testing.assert_close(getattr(back, k), getattr(cams, k)[i:i + 1])
        uv, depth = back.project(target[None])
        torch.testing.assert_close(uv[0, 0], torch.tensor([80.0, 60.0]), atol=1e-4, rtol=0)
        assert float(depth) > 0
    with pytest.raises(ValueError, match="fov"):
        viewer_cameras([0, 0, 1], [1, 0, 0, 0], 0.0, 1.0, 10)


def test_viewer_quaternion_is_visers():
    """Our (w, x, y, z) means what viser's camera.wxyz means: R_world_camera (OpenCV)."""
    tf = pytest.importorskip("viser.transforms", reason="viser (extra `viewer`) not installed")
    c2w = look_at(torch.tensor([[1.0, -0.5, 0.8]]))[0, :3, :3].double().numpy()
    q = matrix_to_quat(c2w)
    assert np.allclose(tf.SO3(q).as_matrix(), c2w, atol=1e-9)
    assert np.allclose(quat_to_matrix(tf.SO3.from_matrix(c2w).wxyz), c2w, atol=1e-9)


# ----------------------------------------------------------------------------- camera paths
def test_camera_path_round_trip(tmp_path):
    keys = orbit_keyframes()
    frames = interpolate(keys, 12, loop=True)
    path = write_camera_path(tmp_path / "camera_path.json", CameraPath(frames, 0.5, keys), True)
    doc = json.loads(path.read_text())
    assert doc["camera_type"] == "perspective" and doc["is_cycle"] is True
    assert (doc["render_height"], doc["render_width"], doc["seconds"]) == (24, 32, 0.5)
    assert len(doc["camera_path"]) == 12 and len(doc["keyframes"]) == 4
    first = doc["camera_path"][0]
    assert set(first) == {"camera_to_world", "fov", "aspect"} and first["fov"] == \
        pytest.approx(50.0) and first["aspect"] == pytest.approx(32 / 24)
    # row-major OpenGL camera-to-world (nerfstudio's convention)
    gl = opencv_to_opengl(frames.c2w[0].double()).numpy()
    assert np.allclose(np.reshape(first["camera_to_world"], (4, 4)), gl, atol=1e-6)
    back = read_camera_path(path)
    assert back.seconds == 0.5 and back.fps == pytest.approx(24.0)
    for a, b in ((back.cameras, frames), (back.keyframes, keys)):
        assert (a.width, a.height, len(a)) == (b.width, b.height, len(b))
        torch.testing.assert_close(a.c2w, b.c2w, atol=1e-5, rtol=0)
        torch.testing.assert_close(a.fy, b.fy, atol=1e-3, rtol=0)
        torch.testing.assert_close(a.cx, b.cx)
    # never over an existing file
    with pytest.raises(FileExistsError):
        write_camera_path(path, CameraPath(frames, 0.5, keys))
    assert unused_path(path).name == "camera_path_001.json"
    (tmp_path / "camera_path_001.json").write_text("{}")
    assert unused_path(path).name == "camera_path_002.json"


def test_interpolation_passes_through_keyframes():
    keys = orbit_keyframes(3)
    open_path = interpolate(keys, 9)          # 4 frames per segment, ends on the keyframes
    torch.testing.assert_close(open_path.c2w[[0, 4, 8]], keys.c2w, atol=1e-5, rtol=0)
    loop = interpolate(keys, 9, loop=True)    # 3 frames per segment, back towards the first
    torch.testing.assert_close(loop.c2w[[0, 3, 6]], keys.c2w, atol=1e-5, rtol=0)
    R = open_path.c2w[:, :3, :3]
    torch.testing.assert_close(R @ R.transpose(1, 2), torch.eye(3).expand(9, 3, 3), atol=1e-5,
                               rtol=0)
    # between six keyframes on an orbit the spline stays near it (chords would dip to 0.87)
    radius = interpolate(orbit_keyframes(6), 48, loop=True).centers[:, :2].norm(dim=-1)
    assert float(radius.min()) > 0.97 * 1.3 and float(radius.max()) < 1.01 * 1.3
    single = interpolate(keys[1], 5)
    torch.testing.assert_close(single.c2w, keys.c2w[1:2].expand(5, 4, 4), atol=1e-6, rtol=0)


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.pop("render_height"), "render_height"),
    (lambda d: d.update(camera_path=[]), "non-empty"),
    (lambda d: d.update(camera_type="fisheye"), "perspective only"),
    (lambda d: d["camera_path"][1].update(camera_to_world=[1.0] * 16), r"camera_path\[1\]"),
    (lambda d: d["camera_path"][0].update(fov=180), r"fov: must be in"),
    (lambda d: d["camera_path"][0].pop("fov"), "'fov'"),
])
def test_bad_camera_path_is_one_line_error(tmp_path, edit, match):
    keys = orbit_keyframes(2)
    path = write_camera_path(tmp_path / "p.json", CameraPath(interpolate(keys, 3), 1.0, keys))
    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(DataError, match=match) as exc:
        read_camera_path(path)
    assert str(path) in str(exc.value) and "\n" not in str(exc.value)


def test_render_camera_path_command(fitted, tmp_path, capsys):
    """A path written by our writer renders through `neural3d render --camera-path`; each frame
    is the method's own render at that camera."""
    import imageio.v2 as iio

    import neural3d
    from neural3d.export.media import to_uint8

    method = neural3d.load(fitted)
    home = method.home_camera()
    keys = Cameras.cat([home, Cameras(look_at(torch.tensor([[0.0, 1.3, 0.6]])), home.fx,
                                      home.fy, home.cx, home.cy, home.width, home.height)])
    cams = interpolate(keys, 3)
    file = write_camera_path(tmp_path / "camera_path.json", CameraPath(cams, 0.125, keys))
    frames = tmp_path / "frames"
    assert main(["render", str(fitted), "--camera-path", str(file), "--out", str(frames)]) == 0
    assert f"wrote {frames} (3 frames" in capsys.readouterr().out
    expected = to_uint8(method.render(None, read_camera_path(file).cameras))
    got = np.stack([iio.imread(frames / f"frame_{i:04d}.png") for i in range(3)])
    assert np.abs(got.astype(int) - expected.astype(int)).max() <= 1
    assert got[0].std() > 10 and np.abs(got[0].astype(int) - got[2]).mean() > 1
    assert main(["render", str(fitted), "--camera-path", str(file), "--out",
                 str(tmp_path / "v.mp4")]) == 0
    assert (tmp_path / "v.mp4").is_file() or (tmp_path / "v.gif").is_file()
    # the file sets the cameras; a bad file is one line, exit 2
    assert main(["render", str(fitted), "--camera-path", str(file), "--path", "orbit",
                 "--out", str(frames)]) == 2
    (tmp_path / "bad.json").write_text('{"render_height": 4}')
    assert main(["render", str(fitted), "--camera-path", str(tmp_path / "bad.json"),
                 "--out", str(frames)]) == 2
    assert "bad.json" in capsys.readouterr().err


# ----------------------------------------------------------------------------- scene
class RayColours:
    """A stand-in generative method whose 'sample' i renders the ray directions (+ i / 10)."""

    name = "raycolours"
    device = torch.device("cpu")

    @staticmethod
    def capabilities():
        return ("sample", "render")

    def sample(self, num, seed=0):
        return [torch.tensor(i / 10) for i in range(num)]

    def render(self, state, cams):
        return (cams.pixel_rays()[1] * 0.5 + 0.5 + state).clamp(0, 1)

    def home_camera(self):
        return Cameras.from_fov(look_at(torch.tensor([[1.3, 0.0, 0.5]])), 50.0, 16)


def test_scene_renders_samples_square_then_crops():
    from neural3d.viewer.scene import Scene

    scene = Scene(RayColours(), samples=3)
    assert len(scene) == 3 and scene.square
    for w, h in ((40, 24), (20, 36), (16, 16)):
        cams = viewer_cameras(*viewer_pose(scene.home)[:3], w / h, h)
        direct = RayColours().render(torch.tensor(0.2), cams)
        torch.testing.assert_close(scene.render(cams, 2), direct, atol=1e-5, rtol=0)
    with pytest.raises(IndexError):
        scene.render(scene.home, 3)


def test_home_cameras_look_at_the_origin():
    from neural3d.methods.registry import get_method

    for name in ("ssdnerf", "stylenerf"):
        cls = get_method(name)
        cam = cls(cls.Config()).home_camera()
        uv, z = cam.project(torch.zeros(1, 3))
        assert len(cam) == 1 and float(z) > 0
        torch.testing.assert_close(uv[0, 0], torch.tensor([cam.width / 2, cam.height / 2]),
                                   atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------- viewer
def test_view_without_viser_names_the_extra(fitted, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "viser", None)   # import viser -> ImportError
    assert main(["view", str(fitted)]) == 2
    err = capsys.readouterr().err
    assert "neural3d[viewer]" in err and len(err.strip().splitlines()) == 1


def test_viewer_exports_keyframes_without_overwriting(fitted, tmp_path):
    pytest.importorskip("viser", reason="viser (extra `viewer`) not installed")
    import neural3d
    from neural3d.viewer.scene import Scene
    from neural3d.viewer.server import Viewer

    scene = Scene(neural3d.load(fitted))
    viewer = Viewer(scene, tmp_path / "paths" / "camera_path.json", port=free_port(),
                    log=lambda s: None)
    try:
        with pytest.raises(ValueError, match="keyframe"):
            viewer.export_camera_path()
        keys = orbit_keyframes(3)
        for i in range(3):
            viewer.add_keyframe(*viewer_pose(keys, i))
        first, second = viewer.export_camera_path(), viewer.export_camera_path()
    finally:
        viewer.close()
    assert first.name == "camera_path.json" and second.name == "camera_path_001.json"
    path = read_camera_path(first)
    assert len(path.cameras) == 4 * 24 and path.cameras.height == scene.home.height
    torch.testing.assert_close(path.keyframes.c2w, keys.c2w, atol=1e-5, rtol=0)


def test_viewer_renders_quarter_resolution_while_moving(fitted):
    pytest.importorskip("viser", reason="viser (extra `viewer`) not installed")
    from types import SimpleNamespace

    import neural3d
    from neural3d.viewer.scene import Scene
    from neural3d.viewer.server import Viewer

    scene = Scene(neural3d.load(fitted))
    viewer = Viewer(scene, "unused.json", port=free_port(), resolution=64, still_after=0.3,
                    log=lambda s: None)
    shown = []
    pos, wxyz, fov, _ = viewer_pose(scene.home)
    camera = SimpleNamespace(position=pos, wxyz=wxyz, fov=fov, aspect=1.5,
                             update_timestamp=time.time())
    client = SimpleNamespace(client_id=7, camera=camera, scene=SimpleNamespace(
        set_background_image=lambda img, **kw: shown.append(img)))
    try:
        viewer._refresh(client)                 # just moved: a quarter of the height
        viewer._refresh(client)                 # nothing new to show
        camera.update_timestamp = time.time() - 1.0
        viewer._refresh(client)                 # still for 1 s: full resolution
        viewer._refresh(client)
    finally:
        viewer.close()
    assert [im.shape for im in shown] == [(16, 24, 3), (64, 96, 3)]
    assert shown[1].dtype == np.uint8 and shown[1].std() > 10


# ----------------------------------------------------------------------------- browser
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _centre_crop(png: bytes, box: dict) -> np.ndarray:
    """The central square (40% of the canvas height) of the canvas in a page screenshot."""
    import io

    from PIL import Image

    img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(np.float64)
    cx, cy, r = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, 0.2 * box["height"]
    return img[int(cy - r):int(cy + r), int(cx - r):int(cx + r)]


def _wait_for(what: str, check, bound_s: float, proc_out: list):
    """Poll ``check()`` until it returns a value (not None); fail after ``bound_s``."""
    end = time.monotonic() + bound_s
    while time.monotonic() < end:
        value = check()
        if value is not None:
            return value
        time.sleep(0.5)
    pytest.fail(f"{what}: not within {bound_s} s; viewer output:\n{''.join(proc_out)}")


def test_page_in_headless_chromium(fitted, tmp_path):
    """`neural3d view` in a subprocess, the page in headless Chromium: the rendered scene is
    visible, and dragging the camera changes it."""
    pytest.importorskip("viser", reason="viser (extra `viewer`) not installed")
    sync_api = pytest.importorskip("playwright.sync_api",
                                   reason="playwright not installed (extra `dev`)")
    if not os.path.exists(CHROMIUM):
        pytest.skip(f"{CHROMIUM} missing (Debian package chromium; `make test` installs it "
                    "where it can)")
    repo = Path(__file__).resolve().parent.parent
    env = {**os.environ, "NEURAL3D_BACKEND": "torch", "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(repo), os.environ.get("PYTHONPATH", "")])}
    # the torch backend builds nothing, so the bounds below only wait for the server and pages
    proc = subprocess.Popen(
        [sys.executable, "-m", "neural3d.cli", "view", str(fitted), "--port", str(free_port()),
         "--threads", "1", "--resolution", "96"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    out: list[str] = []
    reader = threading.Thread(target=lambda: out.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        url = _wait_for("the viewer's URL line", lambda: next(
            (w for line in out if line.startswith("neural3d view:") for w in line.split()
             if w.startswith("http://")), None) if proc.poll() is None else pytest.fail(
            "neural3d view exited:\n" + "".join(out)), 120, out)
        with sync_api.sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=[
                "--no-sandbox", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"])
            page = browser.new_page(viewport={"width": 1000, "height": 600})
            page.goto(url)
            canvas = page.locator("canvas").first
            canvas.wait_for()
            box = canvas.bounding_box()
            shots = []

            def settled(differs_from=None):
                """A screenshot equal to the previous one whose centre shows a scene (and
                differs from ``differs_from``)."""
                png = page.screenshot()
                crop = _centre_crop(png, box)
                prev, shots[:] = (shots[-1] if shots else None), [*shots[-1:], crop]
                if crop.std() < 12 or prev is None or np.abs(crop - prev).max() > 0:
                    return None
                if differs_from is not None and np.abs(crop - differs_from).mean() < 2:
                    return None
                return png, crop

            png1, crop1 = _wait_for("a rendered scene", settled, 120, out)
            x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
            page.mouse.move(x, y)
            page.mouse.down()
            page.mouse.move(x + box["width"] / 5, y + 10, steps=12)
            page.mouse.up()
            png2, crop2 = _wait_for("a changed view", lambda: settled(crop1), 120, out)
            for label in ("add keyframe", "export camera path"):
                assert page.get_by_role("button", name=label).count() == 1
            browser.close()
        for i, png in ((1, png1), (2, png2)):
            (tmp_path / f"viewer_shot_{i}.png").write_bytes(png)
        assert crop1.std() >= 12 and np.abs(crop2 - crop1).mean() >= 2
    finally:
        proc.terminate()
        proc.wait()
