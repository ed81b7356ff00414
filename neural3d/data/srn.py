"""Readers for the SRN ShapeNet layout (also used for SSDNeRF's ABO tables).

Layout (pixelNeRF / SSDNeRF)::

    ROOT/<category>_<split>/<object_id>/rgb/000000.png        RGB or RGBA, on white
                                       /pose/000000.txt       4x4 c2w, OpenCV, 16 numbers
                                       /intrinsics.txt        "f cx cy 0." ... "H W"

e.g. ``srn_cars/cars_train``, ``srn_chairs/chairs_test``, SSDNeRF's ``data/abo/tables_train``.
SRN's public chairs training split nests one more folder (``chairs_train/chairs_2.0_train``);
any split folder whose objects sit in a single sub-folder is handled the same way.

Images and poses are paired by file stem (as SSDNeRF does). ``intrinsics.txt``: the first line
holds ``f cx cy [...]`` and the last ``H W`` (real SRN files have an origin line and a
near-plane/scale line in between). If the images are not ``H x W`` the intrinsics are scaled to
the image size.

Split object lists: when a list of object ids exists it selects (and orders) the objects of a
split. Looked up, first found wins: ``ROOT/<category>_<split>.lst`` or ``.txt`` next to the split
folder, then ``<split folder>/<split>.lst``, ``softras_<split>.lst`` (pixelNeRF's DVR lists) and
``objects.txt`` inside it. One id per line; blank lines and ``#`` comments ignored.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from neural3d.data.core import (
    IMAGE_EXTS,
    WHITE,
    Background,
    DataError,
    MultiViewObject,
    check_pose,
    load_image,
    stack_views,
)


def _numbers(text: str, path: Path, what: str) -> list[float]:
    tokens = text.replace(",", " ").split()
    out = []
    for tok in tokens:
        try:
            out.append(float(tok))
        except ValueError as e:
            raise DataError(f"{path}: malformed {what}: {tok!r} is not a number") from e
    return out


def read_srn_intrinsics(path: str | Path) -> tuple[float, float, float, int, int]:
    """``(f, cx, cy, H, W)`` from an SRN ``intrinsics.txt``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: intrinsics file is missing")
    try:
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read intrinsics ({e})") from e
    if len(lines) < 2:
        raise DataError(f"{path}: malformed intrinsics: expected 'f cx cy 0.' on the first line "
                        f"and 'H W' on the last, got {len(lines)} line(s)")
    first = _numbers(lines[0], path, "intrinsics (first line 'f cx cy 0.')")
    last = _numbers(lines[-1], path, "intrinsics (last line 'H W')")
    if len(first) < 3:
        raise DataError(f"{path}: malformed intrinsics: first line needs 'f cx cy', "
                        f"got {lines[0]!r}")
    if len(last) != 2 or any(v <= 0 or v != int(v) for v in last):
        raise DataError(f"{path}: malformed intrinsics: last line must be 'H W' (two positive "
                        f"integers), got {lines[-1]!r}")
    f, cx, cy = first[:3]
    bad = [k for k, v in (("f", f), ("cx", cx), ("cy", cy)) if not np.isfinite(v)]
    if bad:
        raise DataError(f"{path}: malformed intrinsics: {', '.join(bad)} must be finite, got "
                        f"f={f}, cx={cx}, cy={cy}")
    if f <= 0:
        raise DataError(f"{path}: malformed intrinsics: focal length must be positive, "
                        f"got f={f}")
    return f, cx, cy, int(last[0]), int(last[1])


def read_srn_pose(path: str | Path, atol: float = 1e-3) -> np.ndarray:
    """A 4x4 OpenCV c2w from a pose file (16 numbers, one or four lines; 12 = 3x4 accepted)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: pose file is missing")
    try:
        vals = _numbers(path.read_text(), path, "pose")
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read pose ({e})") from e
    if len(vals) == 12:
        vals += [0.0, 0.0, 0.0, 1.0]
    if len(vals) != 16:
        raise DataError(f"{path}: malformed pose: expected 16 numbers (a 4x4 matrix), "
                        f"got {len(vals)}")
    return check_pose(np.array(vals, dtype=np.float64).reshape(4, 4), path, atol)


def _files(folder: Path, exts: tuple[str, ...]) -> dict[str, Path]:
    """``{stem: path}`` of the files in ``folder`` with one of ``exts``; a symlink among them
    that leads to no file (broken, or a loop) is an error naming it."""
    if not folder.is_dir():
        if folder.is_symlink():
            raise DataError(f"{folder}: symlink leads to no folder (broken or a loop)")
        return {}
    out = {}
    for p in sorted(folder.iterdir()):
        if p.suffix not in exts:
            continue
        if p.is_file():
            out[p.stem] = p
        elif p.is_symlink():
            raise DataError(f"{p}: symlink leads to no file (broken or a loop)")
    return out


def is_srn_object(path: str | Path) -> bool:
    p = Path(path)
    return (p / "intrinsics.txt").is_file() or ((p / "rgb").is_dir() and (p / "pose").is_dir())


def read_srn_object(path: str | Path, resolution: Any = None, background: Background | None = None,
                    views: Any = None, pose_atol: float = 1e-3) -> MultiViewObject:
    """Read one SRN-layout object folder.

    ``resolution``: None (keep), ``R`` or ``(H, W)`` (antialiased resize, intrinsics scaled).
    ``background``: RGBA images are composited on it (default white, as SRN/ABO renders).
    ``views``: optional list of indices (into the sorted views) to read only some views.
    """
    path = Path(path)
    background = WHITE if background is None else tuple(float(c) for c in background)
    if not path.is_dir():
        if path.is_symlink():
            raise DataError(f"{path}: object folder is a symlink that leads nowhere (broken or "
                            "a loop)")
        raise DataError(f"{path}: object folder is missing")
    f, cx, cy, H, W = read_srn_intrinsics(path / "intrinsics.txt")
    rgbs = _files(path / "rgb", IMAGE_EXTS)
    poses = _files(path / "pose", (".txt",))
    if not rgbs:
        raise DataError(f"{path / 'rgb'}: object has no images (empty object)")
    if len(rgbs) != len(poses) or set(rgbs) != set(poses):
        no_pose = sorted(set(rgbs) - set(poses))
        no_img = sorted(set(poses) - set(rgbs))
        detail = []
        if no_pose:
            detail.append(f"images without pose: {', '.join(no_pose[:5])}")
        if no_img:
            detail.append(f"poses without image: {', '.join(no_img[:5])}")
        raise DataError(f"{path}: {len(rgbs)} images in rgb/ but {len(poses)} poses in pose/ "
                        f"({'; '.join(detail)})")
    stems = sorted(rgbs)
    if views is not None:
        stems = [stems[i] for i in views]
    images, alphas, c2ws, scale = [], [], [], []
    for s in stems:
        img, alpha = load_image(rgbs[s], background)
        images.append(img)
        alphas.append(alpha)
        c2ws.append(read_srn_pose(poses[s], pose_atol))
        ih, iw = img.shape[:2]
        if not 1 / 64 <= iw / W <= 64:
            raise DataError(f"{path / 'intrinsics.txt'}: declares {W}x{H} images but "
                            f"{rgbs[s].name} is {iw}x{ih}")
        if (ih, iw) != (H, W) and abs(ih / H - iw / W) > 1e-6:
            raise DataError(f"{rgbs[s]}: image is {iw}x{ih}, intrinsics "
                            f"{path / 'intrinsics.txt'} say {W}x{H} (aspect ratio differs)")
        scale.append(iw / W)
    sc = np.asarray(scale)
    return stack_views(path, path.name, images, alphas, np.stack(c2ws), f * sc, f * sc,
                       cx * sc, cy * sc, resolution, background, stems,
                       [rgbs[s] for s in stems])


def _check_id(object_id: str, where: str) -> str:
    """An object id is one folder name: path separators, ``.`` and ``..`` are refused (a list
    entry ``../cars_test/x`` would reach another split)."""
    if object_id in (".", "..") or "/" in object_id or "\\" in object_id or \
            Path(object_id).is_absolute():
        raise DataError(f"{where}: object id {object_id!r} is not a folder name (paths and "
                        "'..' are refused)")
    return object_id


def _read_list(path: Path) -> list[str]:
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot read object list ({e})") from e
    ids = []
    for n, ln in enumerate(text.splitlines(), 1):
        ln = ln.split("#", 1)[0].strip()
        if ln:
            ids.append(_check_id(ln, f"{path} line {n}"))
    return ids


class SRNCategory:
    """The objects of one split of an SRN-layout category, read one at a time.

    ``SRNCategory("data/shapenet", "cars", "train")`` reads ``data/shapenet/cars_train``;
    ``SRNCategory("data/abo", "tables", "test")`` reads SSDNeRF's ABO tables. ``root`` may also be
    the split folder itself (``category``/``split`` are then only labels). Objects are ordered as
    in the split's object list if there is one (see module docstring), else sorted by id.
    """

    def __init__(self, root: str | Path, category: str, split: str = "train",
                 resolution: Any = None, background: Background | None = None,
                 object_list: str | Path | None = None) -> None:
        self.root = Path(root)
        self.category, self.split = category, split
        self.resolution, self.background = resolution, background
        split_dir = self.root / f"{category}_{split}"
        if not split_dir.is_dir():
            if self.root.is_dir() and any(is_srn_object(p) for p in self.root.iterdir()):
                split_dir = self.root
            else:
                raise DataError(f"{split_dir}: split folder is missing")
        subdirs = [p for p in sorted(split_dir.iterdir()) if p.is_dir()]
        if len(subdirs) == 1 and not is_srn_object(subdirs[0]):
            split_dir = subdirs[0]  # e.g. chairs_train/chairs_2.0_train
        self.split_dir = split_dir
        candidates = ([Path(object_list)] if object_list is not None else [
            self.root / f"{category}_{split}.lst", self.root / f"{category}_{split}.txt",
            split_dir / f"{split}.lst", split_dir / f"softras_{split}.lst",
            split_dir / "objects.txt"])
        self.list_file: Path | None = next((c for c in candidates if c.is_file()), None)
        if object_list is not None and self.list_file is None:
            raise DataError(f"{object_list}: object list file is missing")
        if self.list_file is not None:
            ids = _read_list(self.list_file)
            missing = [i for i in ids if not (split_dir / i).is_dir()]
            if missing:
                raise DataError(f"{self.list_file}: {len(missing)} listed object(s) have no "
                                f"folder in {split_dir}, e.g. {missing[0]!r}")
        else:
            ids = [p.name for p in sorted(split_dir.iterdir()) if p.is_dir() and is_srn_object(p)]
        if not ids:
            raise DataError(f"{split_dir}: no objects found (expected <object>/intrinsics.txt)")
        self.object_ids: list[str] = ids

    def __len__(self) -> int:
        return len(self.object_ids)

    def __getitem__(self, i: int) -> MultiViewObject:
        return self.read(self.object_ids[i])

    def __iter__(self):
        for oid in self.object_ids:
            yield self.read(oid)

    def object_path(self, object_id: str) -> Path:
        return self.split_dir / _check_id(object_id, str(self.split_dir))

    def read(self, object_id: str, views: Any = None) -> MultiViewObject:
        return read_srn_object(self.object_path(object_id), self.resolution, self.background,
                               views=views)

    def load(self, max_objects: int | None = None, progress: bool = False
             ) -> list[MultiViewObject]:
        """Read the first ``max_objects`` objects (all by default) into memory."""
        from tqdm.auto import tqdm

        ids = self.object_ids[:max_objects] if max_objects is not None else self.object_ids
        return [self.read(i) for i in tqdm(ids, desc=f"{self.category}_{self.split}",
                                           unit="obj", disable=not progress)]

    def __repr__(self) -> str:
        return f"SRNCategory({str(self.split_dir)!r}, {len(self)} objects)"


#: SSDNeRF's ABO tables are in the same (SRN/pixelNeRF) layout: ``ABOCategory(root, "tables")``.
ABOCategory = SRNCategory


def read_posed_image(image: str | Path, pose: str | Path, size: tuple[int, int],
                     intrinsics: str | Path | None = None,
                     default_intrinsics: tuple[float, float, float, float] | None = None,
                     background: Background | None = None):
    """One user image as a posed view at ``size = (H, W)``: ``(images [1,H,W,3], Cameras)``.

    ``pose``: an SRN pose file (OpenCV c2w). ``intrinsics``: an SRN ``intrinsics.txt``, whose
    ``f cx cy`` hold for its declared ``H W`` (the image may be any size of the same aspect);
    without it, ``default_intrinsics`` ``(fx, fy, cx, cy)`` at ``size`` (the image is taken to
    span the same field of view). The image is resized to ``size`` (antialiased) and the
    intrinsics scaled with it. Errors are :class:`DataError` naming the file."""
    from neural3d.cameras import Cameras
    from neural3d.data.core import resize_images

    background = WHITE if background is None else tuple(float(c) for c in background)
    img, _ = load_image(image, background)
    c2w = read_srn_pose(pose)
    H, W = size
    ih, iw = img.shape[:2]
    if intrinsics is not None:
        f, cx, cy, h0, w0 = read_srn_intrinsics(intrinsics)
        if abs(ih / h0 - iw / w0) > 1e-6 * max(ih / h0, iw / w0) + 1e-3:
            raise DataError(f"{image}: image is {iw}x{ih}, intrinsics {intrinsics} say "
                            f"{w0}x{h0} (aspect ratio differs)")
        sx, sy = W / w0, H / h0
        fx, fy, cx, cy = f * sx, f * sy, cx * sx, cy * sy
    elif default_intrinsics is not None:
        fx, fy, cx, cy = default_intrinsics
    else:
        raise ValueError("read_posed_image needs intrinsics or default_intrinsics")
    images = resize_images(torch.from_numpy(img)[None], (H, W))
    return images, Cameras(torch.as_tensor(c2w, dtype=torch.float32)[None], fx, fy, cx, cy, W, H)
