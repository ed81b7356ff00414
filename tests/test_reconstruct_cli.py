"""``neural3d reconstruct ssdnerf``: a user's posed image -> state, view, turntable, mesh."""

import pytest
import torch
from PIL import Image

from neural3d.cli import main
from neural3d.data import DataError, SRNCategory, read_posed_image


@pytest.fixture(autouse=True)
def _torch_backend(monkeypatch):
    monkeypatch.setenv("NEURAL3D_BACKEND", "torch")
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from neural3d.methods.ssdnerf import train
    from neural3d.methods.ssdnerf.config import tiny_config

    base = tmp_path_factory.mktemp("ssd")
    train(tiny_config(base / "data", base / "run", steps=2))
    return base


def _view(run):
    obj = run / "data" / "cars_test" / SRNCategory(run / "data", "cars", "test").object_ids[0]
    return obj / "rgb" / "000002.png", obj / "pose" / "000002.txt", obj / "intrinsics.txt"


def test_any_size_image_is_resized_with_its_intrinsics(run, tmp_path):
    img, pose, intr = _view(run)
    obj = SRNCategory(run / "data", "cars", "test").read(
        SRNCategory(run / "data", "cars", "test").object_ids[0])
    ref_img, ref_cam = obj.images[2:3], obj.cameras[torch.tensor([2])]
    big = tmp_path / "big.png"
    Image.open(img).resize((48, 48), Image.NEAREST).save(big)  # 3x, any size works
    images, cams = read_posed_image(big, pose, (16, 16), intr)
    assert images.shape == (1, 16, 16, 3)
    assert torch.allclose(images, ref_img, atol=1e-6)  # 3x nearest up, area down: exact
    for k in ("c2w", "fx", "fy", "cx", "cy"):
        assert torch.allclose(getattr(cams, k), getattr(ref_cam, k)), k
    # without intrinsics: the defaults at the target size
    _, c2 = read_posed_image(big, pose, (16, 16), None, (20.0, 20.0, 8.0, 8.0))
    assert c2.fx.tolist() == [20.0] and c2.width == 16
    wide = tmp_path / "wide.png"
    Image.open(img).resize((32, 16)).save(wide)
    with pytest.raises(DataError, match=r"wide.png: image is 32x16, .* \(aspect ratio differs\)"):
        read_posed_image(wide, pose, (16, 16), intr)


def test_cli_writes_turntable_and_mesh(run, tmp_path, capsys):
    img, pose, intr = _view(run)
    out = tmp_path / "out"
    assert main(["reconstruct", "ssdnerf", str(run / "run/checkpoints/last.pt"), "--image",
                 str(img), "--pose", str(pose), "--intrinsics", str(intr), "--out", str(out),
                 "--frames", "3", "--mesh-res", "16", "--level", "0.75", "--recon", "guided",
                 "--threads", "1"]) == 0
    printed = capsys.readouterr().out.split()
    names = sorted(p.rsplit("/", 1)[-1] for p in printed)
    assert names in (["mesh.ply", "state.pt", "turntable.mp4", "view.png"],
                     ["mesh.ply", "state.pt", "turntable.gif", "view.png"])
    for p in printed:
        assert (out / p.rsplit("/", 1)[-1]).is_file() and p.startswith(str(out))
    assert torch.load(out / "state.pt").shape == (1, 3, 2, 8, 8)
    assert Image.open(out / "view.png").size == (32, 16)  # input | render


@pytest.mark.parametrize("bad", ["image", "pose"])
def test_cli_bad_image_or_pose_is_one_line_naming_the_file(run, tmp_path, capsys, bad):
    img, pose, intr = _view(run)
    if bad == "image":
        img = tmp_path / "nope.png"
    else:
        pose = tmp_path / "pose.txt"
        pose.write_text("1 0 0 0 0 1 0 0")
    capsys.readouterr()
    assert main(["reconstruct", "ssdnerf", str(run / "run/checkpoints/last.pt"), "--image",
                 str(img), "--pose", str(pose), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert str(img if bad == "image" else pose) in err
    assert not (tmp_path / "o").exists()
