"""Blender / nerf_synthetic and nerfstudio transforms.json readers."""

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from neural3d.cameras import Cameras, look_at, opencv_to_opengl, random_sphere_eyes
from neural3d.data import DataError, read_object, read_transforms
from neural3d.data.toy import make_toy_object, render_toy_views


def _scene(n=3, size=24, seed=0):
    c2w = look_at(random_sphere_eyes(n, 1.3, rng=seed)).double()
    cams = Cameras.srn(c2w, res=size)
    images, alpha = render_toy_views(make_toy_object("cars", seed), cams, return_alpha=True)
    return cams, c2w, images, alpha


def _save_rgba(path, image, alpha):
    rgba = np.concatenate([image.numpy(), alpha.numpy()[..., None]], -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((rgba * 255 + 0.5).astype(np.uint8), "RGBA").save(path)


def write_blender(root, split="train", n=3, size=24):
    cams, c2w, images, alpha = _scene(n, size)
    frames = []
    for i in range(n):
        _save_rgba(root / split / f"r_{i}.png", images[i], alpha[i])
        frames.append({"file_path": f"./{split}/r_{i}", "rotation": 0.0,
                       "transform_matrix": opencv_to_opengl(c2w[i]).tolist()})
    fov = 2 * math.atan(size / 2 / float(cams.fx[0]))
    (root / f"transforms_{split}.json").write_text(
        json.dumps({"camera_angle_x": fov, "frames": frames}))
    return cams, images


def test_blender_scene_matches_opencv_cameras(tmp_path):
    cams, images = write_blender(tmp_path / "lego")
    obj = read_object(tmp_path / "lego")  # defaults to the train split
    assert obj.object_id == "lego" and obj.view_ids == ["r_0", "r_1", "r_2"]
    assert torch.allclose(obj.cameras.c2w, cams.c2w, atol=1e-6)
    assert torch.allclose(obj.cameras.fx, cams.fx, atol=1e-4)
    assert torch.allclose(obj.cameras.cx, cams.cx)
    # composited on white: same as the toy renderer's white background (up to 8-bit rounding)
    assert (obj.images - images).abs().max() < 1.5 / 255
    black = read_transforms(tmp_path / "lego", split="train", background=(0, 0, 0))
    corner = black.images[:, 0, 0]
    assert (corner == 0).all() and black.background == (0.0, 0.0, 0.0)
    half = read_transforms(tmp_path / "lego" / "transforms_train.json", resolution=12)
    assert half.images.shape == (3, 12, 12, 3)
    assert torch.allclose(half.cameras.fx, cams.fx / 2, atol=1e-4)
    with pytest.raises(DataError, match="transforms_val.json"):
        read_transforms(tmp_path / "lego", split="val")


def test_nerfstudio_per_file_and_per_frame_intrinsics(tmp_path):
    cams, c2w, images, alpha = _scene(3, 24, seed=1)
    root = tmp_path / "ns"
    frames = []
    for i in range(3):
        _save_rgba(root / "images" / f"frame_{i:05d}.png", images[i], alpha[i])
        frames.append({"file_path": f"images/frame_{i:05d}.png",
                       "transform_matrix": opencv_to_opengl(c2w[i]).tolist()})
    frames[2].update(fl_x=20.0, fl_y=21.0, cx=11.0, cy=13.0)  # per-frame override
    meta = {"camera_model": "OPENCV", "fl_x": float(cams.fx[0]), "fl_y": float(cams.fy[0]),
            "cx": 12.0, "cy": 12.0, "w": 24, "h": 24, "k1": 0.0, "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta))
    obj = read_object(root)
    assert obj.object_id == "ns"
    assert torch.allclose(obj.cameras.c2w, cams.c2w, atol=1e-6)
    assert torch.allclose(obj.cameras.fx[:2], cams.fx[:2])
    assert obj.cameras.fx[2] == 20.0 and obj.cameras.fy[2] == 21.0
    assert obj.cameras.cx[2] == 11.0 and obj.cameras.cy[2] == 13.0
    # images downscaled on disk (nerfstudio's images_2): intrinsics scaled to the image
    Image.open(root / "images" / "frame_00000.png").resize((12, 12)).save(
        root / "images" / "frame_00000.png")
    for k in ("fl_x", "fl_y", "cx", "cy"):
        frames[2].pop(k)
    (root / "transforms.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match=r"frame_00001\.png: image is 24x24"):
        read_transforms(root)
    small = read_transforms(root, resolution=12)
    assert torch.allclose(small.cameras.fx, cams.fx / 2, atol=1e-4)
    meta["k1"] = 0.1
    (root / "transforms.json").write_text(json.dumps(meta))
    with pytest.warns(UserWarning, match="distortion"):
        read_transforms(root, resolution=12)


def test_transforms_bad_input(tmp_path):
    root = tmp_path / "s"
    write_blender(root, n=2, size=8)
    path = root / "transforms_train.json"
    good = json.loads(path.read_text())

    def expect(meta, match):
        path.write_text(meta if isinstance(meta, str) else json.dumps(meta))
        with pytest.raises(DataError, match=match):
            read_transforms(root)

    expect("{not json", r"transforms_train\.json: cannot parse")
    expect({**good, "frames": []}, r"transforms_train\.json: 'frames' is empty")
    bad = json.loads(json.dumps(good))
    bad["frames"][1]["transform_matrix"][0][0] = 3.0
    expect(bad, r"frame 1 \(r_1\.png\): pose is not a rigid")
    bad = json.loads(json.dumps(good))
    bad["frames"][0]["file_path"] = "./train/r_9"
    expect(bad, r"r_9\.png: image file is missing")
    bad = {k: v for k, v in good.items() if k != "camera_angle_x"}
    expect(bad, r"frame 0: no intrinsics")
    expect({**good, "camera_angle_x": "wide"}, r"'camera_angle_x' must be a number")
    bad = json.loads(json.dumps(good))
    bad["frames"][0]["transform_matrix"] = [[1, 0, 0], [0, 1, 0]]
    expect(bad, r"transform_matrix must be 4x4")


def test_splits_as_each_layout_defines_them(tmp_path):
    """A Blender scene trains on transforms_train.json and is scored on transforms_test.json;
    other layouts hold out every N-th view; --eval-data overrides both."""
    from neural3d.data.scenes import holdout_split, train_and_heldout

    assert holdout_split(10, 4) == ([1, 2, 3, 5, 6, 7, 9], [0, 4, 8])
    assert holdout_split(1, 8) == ([0], []) and holdout_split(5, 1) == ([0, 1, 2, 3, 4], [])
    write_blender(tmp_path / "lego", "train", n=4)
    write_blender(tmp_path / "lego", "test", n=2)
    train, held, note = train_and_heldout(tmp_path / "lego", every=2)
    assert len(train) == 4 and len(held) == 2 and "transforms_test.json" in note
    assert held.view_ids == ["r_0", "r_1"] and "test" in str(held.path)
    (tmp_path / "lego" / "transforms_test.json").unlink()
    train, held, note = train_and_heldout(tmp_path / "lego")
    assert len(train) == 4 and held is None and "missing" in note
    write_blender(tmp_path / "capture", "train", n=5)
    (tmp_path / "capture" / "transforms_train.json").rename(
        tmp_path / "capture" / "transforms.json")
    train, held, note = train_and_heldout(tmp_path / "capture", every=2)
    assert train.view_ids == ["r_1", "r_3"] and held.view_ids == ["r_0", "r_2", "r_4"]
    train, held, _ = train_and_heldout(tmp_path / "capture", eval_path=tmp_path / "lego")
    assert len(train) == 5 and len(held) == 4


# ----------------------------------------------------------------------------- export
def _same_cameras(a: Cameras, b: Cameras):
    assert (a.width, a.height) == (b.width, b.height)
    assert torch.allclose(a.c2w.double(), b.c2w.double(), rtol=0, atol=1e-5)
    for k in ("fx", "fy", "cx", "cy"):
        assert torch.allclose(getattr(a, k).double(), getattr(b, k).double(), rtol=0,
                              atol=1e-5), k


def test_export_transforms_of_a_toy_dataset_reads_back(tmp_path, capsys):
    """``neural3d data export-transforms``: every object of an SRN-layout split (the toy
    category) as a nerfstudio scene; our reader gives back the source's OpenCV poses,
    intrinsics and pixels."""
    from neural3d.cli import main
    from neural3d.data import SRNCategory
    from neural3d.data.toy import write_toy_dataset

    write_toy_dataset(tmp_path / "toy", "cars", objects=3, views=4, test_views=0, res=16,
                      seed=0, progress=False)
    out = tmp_path / "ns"
    assert main(["data", "export-transforms", str(tmp_path / "toy"), "--out", str(out),
                 "--max-objects", "2"]) == 0
    cat = SRNCategory(tmp_path / "toy", "cars", "train")
    assert sorted(p.name for p in out.iterdir()) == cat.object_ids[:2]
    for oid in cat.object_ids[:2]:
        src, back = cat.read(oid), read_transforms(out / oid)
        _same_cameras(src.cameras, back.cameras)
        assert torch.equal(src.images, back.images) and back.view_ids == src.view_ids
        meta = json.loads((out / oid / "transforms.json").read_text())
        assert meta["camera_model"] == "OPENCV" and meta["w"] == meta["h"] == 16
        assert all(f["file_path"].startswith("images/") for f in meta["frames"])
        # OpenGL in the file: camera y and z flipped against the source's OpenCV pose
        m = np.array(meta["frames"][0]["transform_matrix"])
        c = src.cameras.c2w[0].double().numpy()
        assert np.allclose(m[:, 0], c[:, 0], atol=1e-6) and np.allclose(m[:, 1:3], -c[:, 1:3],
                                                                        atol=1e-6)
        # Blender-style fov agrees with the focal length
        assert math.isclose(meta["camera_angle_x"], 2 * math.atan(8 / float(src.cameras.fx[0])))
    # one object folder (and symlinked images)
    obj = cat.object_path(cat.object_ids[2])
    assert main(["data", "export-transforms", str(obj), "--out", str(tmp_path / "one"),
                 "--link"]) == 0
    back = read_object(tmp_path / "one")
    _same_cameras(cat.read(cat.object_ids[2]).cameras, back.cameras)
    assert all((tmp_path / "one" / "images").joinpath(p.name).is_symlink()
               for p in (tmp_path / "one" / "images").iterdir())
    # no category given and none to infer: one line naming the option
    (tmp_path / "toy" / "chairs_train").mkdir()
    assert main(["data", "export-transforms", str(tmp_path / "toy"), "--out",
                 str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--category" in err and "cars, chairs" in err


def test_export_transforms_per_frame_intrinsics_and_blender_source(tmp_path):
    """A Blender scene (OpenGL, fov) re-exported; views with different intrinsics are written
    per frame and read back the same."""
    from dataclasses import replace

    from neural3d.data.transforms import write_transforms

    write_blender(tmp_path / "scene", n=3, size=24)
    src = read_object(tmp_path / "scene")
    write_transforms(src, tmp_path / "a")
    _same_cameras(src.cameras, read_transforms(tmp_path / "a").cameras)
    cams = replace(src.cameras, fx=src.cameras.fx * torch.tensor([1.0, 1.1, 0.9]),
                   cx=src.cameras.cx + torch.tensor([0.0, 0.5, -1.25]))
    varied = replace(src, cameras=cams)
    write_transforms(varied, tmp_path / "b")
    meta = json.loads((tmp_path / "b" / "transforms.json").read_text())
    assert "fl_x" not in meta and "camera_angle_x" not in meta and "fl_x" in meta["frames"][1]
    back = read_transforms(tmp_path / "b")
    _same_cameras(cams, back.cameras)
    assert torch.equal(back.images, src.images)
    with pytest.raises(DataError, match="cameras are for 12x12"):
        write_transforms(replace(src, cameras=src.cameras.scaled(12, 12)), tmp_path / "c")
