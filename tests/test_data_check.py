"""``neural3d data check``: each kind of damage to a toy SRN dataset is caught and named."""

import shutil

import numpy as np
import pytest
from PIL import Image

from neural3d.cli import main
from neural3d.data.check import EXPECTED, check_dataset, check_split
from neural3d.data.toy import write_toy_dataset

TOY = {"expect_objects": {"train": 3, "test": 1}, "expect_views": {"train": 4, "test": 5},
       "expect_res": 16}
FLAGS = ["--expect-objects", "train=3,test=1", "--expect-views", "train=4,test=5",
         "--expect-res", "16", "--quiet"]


@pytest.fixture(scope="module")
def pristine(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    write_toy_dataset(root, "cars", objects=3, views=4, test_views=5, res=16, progress=False)
    return root


@pytest.fixture
def root(pristine, tmp_path):
    shutil.copytree(pristine, tmp_path / "data")
    return tmp_path / "data"


def _bad(root, split="train"):
    (rep,) = check_dataset(root, "cars", [split], **{k: v if not isinstance(v, dict) else
                                                     {split: v[split]} for k, v in TOY.items()})
    return rep


def test_clean_toy_passes_with_its_counts(root, capsys):
    reps = check_dataset(root, "cars", **TOY)
    assert [r.split for r in reps] == ["train", "test"]
    assert all(r.ok for r in reps)
    assert reps[0].views == {f"car_train_{i:05d}": 4 for i in range(3)}
    assert main(["data", "check", str(root), "--category", "cars", *FLAGS]) == 0
    assert capsys.readouterr().out.rstrip().endswith("OK")


def test_srn_counts_are_the_default_and_toy_fails_them(root, capsys):
    rep = check_split(root, "cars", "train")
    assert (rep.expected_objects, rep.expected_views, rep.resolution) == (2458, 50, (128, 128))
    assert EXPECTED[("cars", "test")] == (704, 251) and not rep.ok
    assert rep.errors == [f"{root / 'cars_train'}: 3 objects, expected 2458"]
    assert main(["data", "check", str(root), "--category", "cars", "--quiet"]) == 1
    out = capsys.readouterr().out
    assert "BAD train/car_train_00000: 4 views, expected 50" in out


def test_missing_view(root, capsys):
    (root / "cars_train/car_train_00001/rgb/000002.png").unlink()
    rep = _bad(root)
    assert list(rep.bad) == ["car_train_00001"]
    assert rep.bad["car_train_00001"] == [
        "1 pose(s) without image (missing view): 000002", "3 views, expected 4"]
    assert main(["data", "check", str(root), "--category", "cars", *FLAGS]) == 1
    assert "BAD train/car_train_00001: 1 pose(s) without image" in capsys.readouterr().out


def test_object_without_poses(root):
    for p in (root / "cars_train/car_train_00000/pose").iterdir():
        p.unlink()
    rep = _bad(root)
    assert list(rep.bad) == ["car_train_00000"]
    assert rep.bad["car_train_00000"] == ["pose/ has no poses"]


def test_wrong_resolution(root):
    p = root / "cars_test/car_test_00000/rgb/000003.png"
    Image.open(p).resize((20, 16)).save(p)
    rep = _bad(root, "test")
    assert rep.bad == {"car_test_00000": ["1 image(s) not 16x16: 000003.png is 20x16"]}


def test_non_rigid_pose(root):
    p = root / "cars_train/car_train_00002/pose/000001.txt"
    m = np.array(p.read_text().split(), dtype=float).reshape(4, 4)
    m[:3, :3] *= 1.1
    p.write_text(" ".join(str(x) for x in m.ravel()))
    rep = _bad(root)
    (msg,) = rep.bad["car_train_00002"]
    assert msg.startswith("1 bad pose(s): 000001.txt: pose is not a rigid") and \
        "not orthonormal" in msg
    assert list(rep.bad) == ["car_train_00002"]


def test_missing_intrinsics_and_stray_folder(root):
    (root / "cars_train/car_train_00000/intrinsics.txt").unlink()
    (root / "cars_train/notes").mkdir()
    rep = _bad(root)
    assert rep.bad["car_train_00000"] == ["intrinsics.txt: intrinsics file is missing"]
    assert rep.bad["notes"] == ["intrinsics.txt: intrinsics file is missing",
                                "rgb/ has no images", "pose/ has no poses", "0 views, expected 4"]
    assert rep.errors == [f"{root / 'cars_train'}: 4 objects, expected 3"]


def test_chairs_nesting_and_missing_split(root):
    nested = root / "cars_train" / "cars_2.0_train"
    nested.mkdir()
    for p in sorted((root / "cars_train").iterdir()):
        if p != nested:
            shutil.move(p, nested / p.name)
    rep = _bad(root)
    assert rep.ok and rep.folder == str(nested) and len(rep.views) == 3
    (val,) = check_dataset(root, "cars", ["val"])
    assert val.errors == [f"{root / 'cars_val'}: split folder is missing"]


def test_bad_override_is_one_line_error(root, capsys):
    assert main(["data", "check", str(root), "--category", "cars",
                 "--expect-objects", "trian=3"]) == 2
    assert "--expect-objects: expected N or SPLIT=N" in capsys.readouterr().err
    assert main(["data", "check", str(root / "nope"), "--category", "cars"]) == 2
    assert "nope: dataset folder is missing" in capsys.readouterr().err
