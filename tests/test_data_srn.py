"""SRN / ABO layout reader: real file formats and every kind of bad input."""

import numpy as np
import pytest
import torch
from PIL import Image

from neural3d.cameras import look_at, random_sphere_eyes
from neural3d.data import (
    ABOCategory,
    DataError,
    SRNCategory,
    read_object,
    read_srn_intrinsics,
    read_srn_object,
)

# the intrinsics.txt of a real SRN cars object (f cx cy 0. / origin / scale / H W)
SRN_INTRINSICS = "131.250000 64.000000 64.000000 0.\n0. 0. 0.\n1.\n128 128\n"


def _pose_text(m, four_lines=False):
    rows = [" ".join(f"{v:.8f}" for v in r) for r in m]
    return "\n".join(rows) + "\n" if four_lines else " ".join(rows) + "\n"


def make_srn_object(folder, n=3, size=16, rgba=True, intrinsics=None, four_lines=False,
                    seed=0):
    """An SRN object folder with random images (RGBA: left half opaque red, right transparent)."""
    (folder / "rgb").mkdir(parents=True)
    (folder / "pose").mkdir()
    f = 131.25 * size / 128
    (folder / "intrinsics.txt").write_text(
        intrinsics or f"{f} {size / 2} {size / 2} 0.\n0. 0. 0.\n1.\n{size} {size}\n")
    c2w = look_at(random_sphere_eyes(n, 1.3, rng=seed)).numpy()
    for i in range(n):
        if rgba:
            img = np.zeros((size, size, 4), np.uint8)
            img[:, : size // 2] = (255, 0, 0, 255)
            Image.fromarray(img, "RGBA").save(folder / "rgb" / f"{i:06d}.png")
        else:
            img = np.full((size, size, 3), 255, np.uint8)
            img[: size // 2] = (0, 0, 255)
            Image.fromarray(img).save(folder / "rgb" / f"{i:06d}.png")
        (folder / "pose" / f"{i:06d}.txt").write_text(_pose_text(c2w[i], four_lines and i % 2))
    return c2w


def test_reads_real_srn_formats_and_composites_rgba(tmp_path):
    obj_dir = tmp_path / "cars_train" / "1a0bc9ab92c915167ae33d942430658c"
    c2w = make_srn_object(obj_dir, n=3, size=16, four_lines=True)
    obj = read_object(obj_dir, background=(0.0, 1.0, 0.0))
    assert obj.object_id == "1a0bc9ab92c915167ae33d942430658c"
    assert obj.images.shape == (3, 16, 16, 3) and obj.images.dtype == torch.float32
    assert torch.allclose(obj.images[0, 0, 0], torch.tensor([1.0, 0.0, 0.0]))
    assert torch.allclose(obj.images[0, 0, -1], torch.tensor([0.0, 1.0, 0.0]))  # transparent
    assert obj.background == (0.0, 1.0, 0.0)
    assert obj.masks is not None and float(obj.masks[0, 0, -1]) == 0.0
    assert torch.allclose(obj.cameras.c2w, torch.tensor(c2w, dtype=torch.float32), atol=1e-6)
    assert float(obj.cameras.fx[0]) == pytest.approx(16.40625)
    assert obj.cameras.width == 16 and obj.view_ids == ["000000", "000001", "000002"]
    assert len(obj.select([0, 2])) == 2


def test_intrinsics_parsing(tmp_path):
    p = tmp_path / "intrinsics.txt"
    p.write_text(SRN_INTRINSICS)
    assert read_srn_intrinsics(p) == (131.25, 64.0, 64.0, 128, 128)
    p.write_text("875.0 256 256 0.\n512 512")  # two-line variant
    assert read_srn_intrinsics(p) == (875.0, 256.0, 256.0, 512, 512)


def test_resize_scales_intrinsics_and_is_antialiased(tmp_path):
    obj_dir = tmp_path / "o"
    make_srn_object(obj_dir, n=2, size=16, rgba=False)
    full = read_srn_object(obj_dir)
    half = read_srn_object(obj_dir, resolution=8)
    assert half.images.shape == (2, 8, 8, 3)
    assert torch.allclose(half.cameras.fx, full.cameras.fx / 2)
    assert torch.allclose(half.cameras.cx, full.cameras.cx / 2)
    assert torch.allclose(half.images, full.images.reshape(2, 8, 2, 8, 2, 3).mean((2, 4)))
    odd = read_srn_object(obj_dir, resolution=(12, 10))
    assert odd.images.shape == (2, 12, 10, 3) and odd.cameras.width == 10
    assert float(odd.cameras.fy[0]) == pytest.approx(float(full.cameras.fy[0]) * 12 / 16)
    # a world point lands at the same relative place at every resolution
    pt = torch.tensor([[0.05, -0.1, 0.02]])
    assert torch.allclose(odd.cameras.project(pt)[0] / torch.tensor([10 / 16, 12 / 16]),
                          full.cameras.project(pt)[0], atol=1e-4)


def test_image_smaller_than_intrinsics_size_scales_intrinsics(tmp_path):
    obj_dir = tmp_path / "o"
    make_srn_object(obj_dir, n=1, size=16, intrinsics="131.25 64 64 0.\n0. 0. 0.\n1.\n128 128\n")
    obj = read_srn_object(obj_dir)
    assert float(obj.cameras.fx[0]) == pytest.approx(131.25 / 8)
    assert float(obj.cameras.cx[0]) == pytest.approx(8.0)


def test_category_splits_lists_and_nesting(tmp_path):
    root = tmp_path / "srn_cars"
    for oid in ("b", "a", "c"):
        make_srn_object(root / "cars_train" / oid, n=1, size=8)
    make_srn_object(root / "cars_test" / "z", n=2, size=8)
    cat = SRNCategory(root, "cars", "train")
    assert cat.object_ids == ["a", "b", "c"] and len(cat) == 3
    assert [o.object_id for o in cat] == ["a", "b", "c"]
    assert [o.object_id for o in cat.load(max_objects=2)] == ["a", "b"]
    assert cat.read("b", views=[0]).images.shape[0] == 1
    # an object list next to the split folder selects and orders the objects
    (root / "cars_train.lst").write_text("c\n# comment\n\na\n")
    assert SRNCategory(root, "cars", "train").object_ids == ["c", "a"]
    (root / "cars_train.lst").write_text("c\nmissing_object\n")
    with pytest.raises(DataError, match="cars_train.lst.*missing_object"):
        SRNCategory(root, "cars", "train")
    # the split folder itself also works as root
    assert SRNCategory(root / "cars_test", "cars", "test").object_ids == ["z"]
    # SRN's chairs_train/chairs_2.0_train nesting
    make_srn_object(root / "chairs_train" / "chairs_2.0_train" / "x", n=1, size=8)
    chairs = SRNCategory(root, "chairs", "train")
    assert chairs.object_ids == ["x"] and chairs[0].object_id == "x"
    # SSDNeRF's ABO tables: same layout
    make_srn_object(tmp_path / "abo" / "tables_train" / "B07B4DBBVX", n=2, size=8)
    tables = ABOCategory(tmp_path / "abo", "tables", "train")
    assert tables.object_ids == ["B07B4DBBVX"] and len(tables[0]) == 2
    with pytest.raises(DataError, match="cars_val"):
        SRNCategory(root, "cars", "val")


# ------------------------------------------------------------------------------- bad input
def _obj(tmp_path, **kw):
    d = tmp_path / "obj"
    make_srn_object(d, **kw)
    return d


def test_missing_image_is_reported(tmp_path):
    d = _obj(tmp_path)
    (d / "rgb" / "000001.png").unlink()
    with pytest.raises(DataError, match=r"3 poses.*000001"):
        read_srn_object(d)


def test_unreadable_image_names_file(tmp_path):
    d = _obj(tmp_path)
    (d / "rgb" / "000002.png").write_bytes(b"\x89PNG\r\n\x1a\nthis is not a png")
    with pytest.raises(DataError, match=r"000002\.png: cannot read image"):
        read_srn_object(d)


@pytest.mark.parametrize("bad, why", [
    (np.diag([2.0, 2.0, 2.0, 1.0]), "orthonormal"),
    (np.diag([1.0, 1.0, -1.0, 1.0]), "determinant"),
    (np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 1]], float), "last row"),
])
def test_non_rigid_pose_names_file(tmp_path, bad, why):
    d = _obj(tmp_path)
    (d / "pose" / "000001.txt").write_text(_pose_text(bad))
    with pytest.raises(DataError, match=rf"000001\.txt: pose is not a rigid.*{why}"):
        read_srn_object(d)


def test_malformed_pose_files(tmp_path):
    d = _obj(tmp_path)
    (d / "pose" / "000000.txt").write_text("1 0 0 0 0 1 0 0 0 0 1\n")
    with pytest.raises(DataError, match=r"000000\.txt: malformed pose: expected 16"):
        read_srn_object(d)
    (d / "pose" / "000000.txt").write_text("1 0 0 0 0 1 0 0 0 0 1 x 0 0 0 1\n")
    with pytest.raises(DataError, match=r"000000\.txt: malformed pose.*'x'"):
        read_srn_object(d)


@pytest.mark.parametrize("text, match", [
    ("", "got 0 line"),
    ("131.25 64 64 0.\n", "got 1 line"),
    ("131.25 64\n0. 0. 0.\n1.\n128 128\n", "first line needs"),
    ("131.25 64 64 0.\n0. 0. 0.\n1.\n128\n", "last line must be 'H W'"),
    ("131.25 64 64 0.\n0. 0. 0.\n1.\n128.5 128\n", "last line must be 'H W'"),
    ("abc 64 64 0.\n128 128\n", "'abc' is not a number"),
    ("-5 64 64 0.\n128 128\n", "focal length must be positive"),
])
def test_malformed_intrinsics(tmp_path, text, match):
    d = _obj(tmp_path)
    (d / "intrinsics.txt").write_text(text)
    with pytest.raises(DataError, match=rf"intrinsics\.txt: .*{match}"):
        read_srn_object(d)


def test_missing_intrinsics_and_counts_and_empty(tmp_path):
    d = _obj(tmp_path)
    (d / "pose" / "000003.txt").write_text((d / "pose" / "000000.txt").read_text())
    with pytest.raises(DataError, match=r"3 images in rgb/ but 4 poses.*poses without image: "
                       r"000003"):
        read_srn_object(d)
    (d / "intrinsics.txt").unlink()
    with pytest.raises(DataError, match=r"intrinsics\.txt: intrinsics file is missing"):
        read_srn_object(d)
    empty = tmp_path / "empty"
    (empty / "rgb").mkdir(parents=True)
    (empty / "pose").mkdir()
    (empty / "intrinsics.txt").write_text(SRN_INTRINSICS)
    with pytest.raises(DataError, match=r"empty.*no images"):
        read_srn_object(empty)
    with pytest.raises(DataError, match="no such file"):
        read_object(tmp_path / "nope")
    with pytest.raises(DataError, match="unrecognised layout"):
        read_object(empty / "rgb")


def test_mixed_image_sizes_need_resolution(tmp_path):
    d = _obj(tmp_path, size=16)
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(d / "rgb" / "000001.png")
    with pytest.raises(DataError, match=r"000001\.png: image is 8x8"):
        read_srn_object(d)
    assert read_srn_object(d, resolution=8).images.shape == (3, 8, 8, 3)
    Image.fromarray(np.zeros((8, 4, 3), np.uint8)).save(d / "rgb" / "000001.png")
    with pytest.raises(DataError, match="aspect ratio"):
        read_srn_object(d)
