import hashlib
import json

import numpy as np
import pytest
import torch

from neural3d.cameras import Cameras, look_at, random_sphere_eyes
from neural3d.cli import main
from neural3d.data import DataError, SRNCategory, read_object
from neural3d.data.toy import (
    TOY_AABB,
    Primitive,
    ToyObject,
    make_toy_object,
    render_toy_views,
    write_toy_dataset,
)


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _box_corners(p: Primitive) -> torch.Tensor:
    c, h = np.array(p.center), np.array(p.half)
    signs = np.array([[sx, sy, sz] for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])
    return torch.tensor(c + signs * h, dtype=torch.float32)


def _cams(n=6, res=48, seed=0):
    eyes = random_sphere_eyes(n, 1.3, upper_hemisphere=False, rng=seed)
    return Cameras.srn(look_at(eyes), res=res)


def test_silhouette_of_box_matches_projected_corners():
    box = Primitive.box((0.05, -0.1, 0.02), (0.5, 0.3, 0.2), (0.6, 0.3, 0.2))
    cams = _cams(8, res=48)
    imgs, alpha = render_toy_views(ToyObject([box]), cams, return_alpha=True)
    assert imgs.shape == (8, 48, 48, 3) and imgs.dtype == torch.float32
    uv, depth = cams.project(_box_corners(box))
    assert (depth > 0).all()
    for v in range(8):
        u8 = (imgs[v].numpy() * 255 + 0.5).astype(np.uint8)
        sil = (u8 < 255).any(-1)
        assert np.array_equal(sil, alpha[v].numpy() > 0)
        assert (u8[~sil] == 255).all()  # background exactly white
        ys, xs = np.nonzero(sil)
        lo, hi = uv[v].min(0).values.numpy(), uv[v].max(0).values.numpy()
        # silhouette pixels [x0, x1] cover pixel centres inside the projected hull
        assert abs(xs.min() - lo[0]) <= 1.0 and abs(xs.max() + 1 - hi[0]) <= 1.0
        assert abs(ys.min() - lo[1]) <= 1.0 and abs(ys.max() + 1 - hi[1]) <= 1.0


def test_cylinder_silhouette_and_front_to_back_order():
    cyl = Primitive.cylinder((0.0, 0.0, 0.0), 0.2, 0.6, 2, (0.2, 0.5, 0.7))
    cams = Cameras.srn(look_at(torch.tensor([[1.3, 0.0, 0.0]])), res=64)
    _, alpha = render_toy_views(ToyObject([cyl]), cams, return_alpha=True)
    sil = alpha[0].numpy() > 0
    ys, xs = np.nonzero(sil)
    # seen side-on from distance 1.3: the top of the silhouette is the nearest point of the top
    # rim (0.2, 0, 0.3); its sides are the tangent rays to the circle of radius 0.2
    f, c = float(cams.fx[0]), 32.0
    top = c - f * 0.3 / 1.1
    half_w = f * 0.2 / np.sqrt(1.3**2 - 0.2**2)
    assert abs(ys.min() - top) <= 1.0 and abs(ys.max() + 1 - (2 * c - top)) <= 1.0
    assert abs(xs.min() - (c - half_w)) <= 1.0 and abs(xs.max() + 1 - (c + half_w)) <= 1.0
    # a red box in front of a blue box hides it
    front = Primitive.box((0.3, 0.0, 0.0), (0.1, 0.2, 0.2), (0.8, 0.0, 0.0))
    back = Primitive.box((-0.3, 0.0, 0.0), (0.1, 0.4, 0.4), (0.0, 0.0, 0.8))
    img = render_toy_views(ToyObject([back, front]), cams)[0]
    centre = img[32, 32]
    assert centre[0] > 0.1 and centre[2] == 0.0


def test_objects_fit_aabb_and_look_distinct():
    lo, hi = np.array(TOY_AABB[0]), np.array(TOY_AABB[1])
    for cat in ("cars", "chairs"):
        objs = [make_toy_object(cat, s) for s in range(20)]
        for o in objs:
            a, b = o.aabb()
            assert (a >= lo).all() and (b <= hi).all()
        assert len({json.dumps(o.to_dict()) for o in objs}) == 20
        back = ToyObject.from_dict(json.loads(json.dumps(objs[0].to_dict())))
        assert back.to_dict() == objs[0].to_dict()
    car = make_toy_object("cars", 0)
    assert sum(p.kind == "cylinder" and p.axis == 1 for p in car.primitives) == 4  # wheels
    with pytest.raises(ValueError):
        make_toy_object("planes", 0)


def test_write_is_deterministic_and_reads_back(tmp_path):
    kw = dict(category="cars", objects=3, views=4, test_views=5, res=32, seed=7, progress=False)
    s1 = write_toy_dataset(tmp_path / "a", **kw)
    write_toy_dataset(tmp_path / "b", **kw)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    write_toy_dataset(tmp_path / "c", **{**kw, "seed": 8})
    pa = sorted((tmp_path / "a" / "cars_train").rglob("*.png"))[0]
    pc = tmp_path / "c" / pa.relative_to(tmp_path / "a")
    assert pa.read_bytes() != pc.read_bytes()
    assert s1["splits"] == {"cars_train": [f"car_train_{i:05d}" for i in range(3)],
                            "cars_test": ["car_test_00000"]}
    meta = json.loads((tmp_path / "a" / "toy_dataset.json").read_text())
    assert meta["aabb"] == [[-0.5, -0.5, -0.5], [0.5, 0.5, 0.5]]
    assert meta["categories"]["cars"]["splits"] == s1["splits"]

    train = SRNCategory(tmp_path / "a", "cars", "train")
    test = SRNCategory(tmp_path / "a", "cars", "test")
    assert len(train) == 3 and len(test) == 1
    assert not set(train.object_ids) & set(test.object_ids)
    obj = train[1]
    assert obj.images.shape == (4, 32, 32, 3) and len(obj.cameras) == 4
    assert obj.view_ids == ["000000", "000001", "000002", "000003"]
    assert float(obj.cameras.fx[0]) == pytest.approx(131.25 / 4)
    # the written poses and images agree: re-render the stored spec with the read cameras
    spec = json.loads((train.object_path(obj.object_id) / "toy_object.json").read_text())
    again = render_toy_views(spec, obj.cameras)
    assert (again - obj.images).abs().max() <= 1.0 / 255 + 1e-6
    # training views on the upper hemisphere for cars, test views on the spiral
    assert (obj.cameras.centers[:, 2] >= 0).all()
    t = test[0]
    assert len(t) == 5 and torch.allclose(t.cameras.centers.norm(dim=-1), torch.tensor(1.3))
    assert read_object(train.object_path(obj.object_id)).object_id == obj.object_id
    with pytest.raises(DataError, match="dataset root: use SRNCategory"):
        read_object(tmp_path / "a")
    with pytest.raises(DataError, match="split folder: use SRNCategory"):
        read_object(tmp_path / "a" / "cars_train")


def test_rewrite_replaces_earlier_run_but_not_foreign_data(tmp_path):
    kw = dict(category="chairs", views=2, test_views=0, res=16, progress=False)
    write_toy_dataset(tmp_path, objects=3, **kw)
    write_toy_dataset(tmp_path, objects=2, **kw)
    assert len(SRNCategory(tmp_path, "chairs", "train")) == 2
    cams = SRNCategory(tmp_path, "chairs", "train")[0].cameras
    write_toy_dataset(tmp_path, category="cars", objects=1, views=2, test_views=0, res=16,
                      progress=False)
    meta = json.loads((tmp_path / "toy_dataset.json").read_text())
    assert set(meta["categories"]) == {"chairs", "cars"}
    assert len(cams) == 2
    (tmp_path / "chairs_train" / "real_object").mkdir()
    with pytest.raises(FileExistsError, match="real_object"):
        write_toy_dataset(tmp_path, objects=2, **kw)


def test_chair_training_views_cover_the_whole_sphere():
    from neural3d.data.toy import toy_cameras

    chairs = toy_cameras("chairs", 200, 32, "train", rng=0)
    cars = toy_cameras("cars", 200, 32, "train", rng=0)
    assert (chairs.centers[:, 2] < 0).any() and (cars.centers[:, 2] >= 0).all()
    assert torch.allclose(chairs.centers.norm(dim=-1), torch.tensor(1.3))


def test_cli_toy_and_preview(tmp_path, capsys):
    out = tmp_path / "toy"
    assert main(["data", "toy", "--category", "chairs", "--objects", "2", "--views", "3",
                 "--test-views", "2", "--res", "24", "--seed", "1", "--out", str(out),
                 "--quiet", "--masks"]) == 0
    assert (out / "chairs_train" / "chair_train_00001" / "mask" / "000002.png").is_file()
    capsys.readouterr()
    assert main(["data", "preview", str(out), "--out", str(tmp_path / "p.png")]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == str(tmp_path / "p.png") and (tmp_path / "p.png").stat().st_size > 0
    obj = read_object(out / "chairs_train" / "chair_train_00000")
    assert obj.masks is None  # rgb has no alpha; masks are separate files
    assert main(["data", "preview", str(tmp_path / "missing")]) == 2
