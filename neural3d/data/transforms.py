"""Readers for ``transforms.json`` layouts: Blender/nerf_synthetic and nerfstudio.

* Blender / nerf_synthetic: ``SCENE/transforms_{train,val,test}.json`` with ``camera_angle_x``
  (horizontal fov, radians; ``camera_angle_y`` used if present) and ``frames[i].file_path`` such
  as ``./train/r_0`` (``.png`` appended when there is no extension). RGBA composited on the
  chosen background (default white).
* nerfstudio: ``DIR/transforms.json`` with intrinsics ``fl_x, fl_y, cx, cy, w, h`` at the top
  level and/or per frame (per-frame values win), ``file_path`` relative to the json file.
  Lens distortion coefficients are ignored (a warning is issued when they are non-zero).

Both store OpenGL camera-to-world matrices (x right, y up, z backwards); they are converted to
OpenCV here. If an image's size differs from the ``w``/``h`` given in the file, the intrinsics are
scaled to the image (nerfstudio's ``images_2`` style downscales).

:func:`write_transforms` is the way back: any object a reader returned (an SRN/toy object, a
Blender scene) as a nerfstudio ``transforms.json`` with its images copied or linked.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np

from neural3d.cameras import opencv_to_opengl, opengl_to_opencv
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

_DISTORTION = ("k1", "k2", "k3", "k4", "p1", "p2")


def find_transforms(path: str | Path, split: str | None = None) -> Path:
    """The json file for ``path`` (a json file, or a folder holding ``transforms.json`` or
    ``transforms_<split>.json``; ``split`` defaults to ``train`` for Blender scenes)."""
    p = Path(path)
    if p.is_file():
        return p
    if not p.is_dir():
        raise DataError(f"{p}: no such file or folder")
    if split is not None:
        cand = p / f"transforms_{split}.json"
        if cand.is_file():
            return cand
        if split in ("all", "") and (p / "transforms.json").is_file():
            return p / "transforms.json"
        raise DataError(f"{cand}: transforms file for split {split!r} is missing")
    for name in ("transforms.json", "transforms_train.json"):
        if (p / name).is_file():
            return p / name
    raise DataError(f"{p}: no transforms.json or transforms_train.json found")


def _num(meta: dict, key: str, where: str, positive: bool = False) -> float:
    try:
        v = float(meta[key])
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: {key!r} must be a number, got {meta[key]!r}") from e
    if not math.isfinite(v):
        raise DataError(f"{where}: {key!r} must be finite, got {v}")
    if positive and v <= 0:
        raise DataError(f"{where}: {key!r} must be positive, got {v}")
    return v


def _angle(meta: dict, key: str, where: str) -> float:
    a = _num(meta, key, where)
    if not 0 < a < math.pi:
        raise DataError(f"{where}: {key!r} must be in (0, pi) radians, got {a}")
    return a


def _resolve_image(base: Path, file_path: str, where: str) -> Path:
    """The image of a frame: ``file_path`` relative to the scene folder ``base`` (``.png`` etc.
    appended when it has no image suffix). Absolute paths and paths that leave ``base`` (``..``)
    are refused: a transforms file only names images of its own dataset. (Symlinks inside the
    folder are followed: whoever made them chose the target.)"""
    if not file_path.strip():
        raise DataError(f"{where}: 'file_path' is empty")
    rel = Path(os.path.normpath(file_path))
    if rel.is_absolute() or PureWindowsPath(file_path).is_absolute() or rel.parts[:1] == ("..",):
        raise DataError(f"{where}: file_path {file_path!r} leaves the scene folder {base} "
                        "(absolute or '..' paths are refused)")
    p = base / rel
    if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff", ".webp", ".bmp"):
        return p
    for ext in IMAGE_EXTS:
        if p.with_name(p.name + ext).is_file():
            return p.with_name(p.name + ext)
    return p.with_name(p.name + ".png")


def read_transforms(path: str | Path, split: str | None = None, resolution: Any = None,
                    background: Background | None = None, pose_atol: float = 1e-3
                    ) -> MultiViewObject:
    """Read a Blender or nerfstudio scene as one :class:`MultiViewObject` (OpenCV cameras)."""
    jpath = find_transforms(path, split)
    background = WHITE if background is None else tuple(float(c) for c in background)
    try:
        meta = json.loads(jpath.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{jpath}: cannot parse transforms json ({e})") from e
    if not isinstance(meta, dict) or not isinstance(meta.get("frames"), list):
        raise DataError(f"{jpath}: expected an object with a 'frames' list")
    frames = meta["frames"]
    if not frames:
        raise DataError(f"{jpath}: 'frames' is empty (empty scene)")
    if any(abs(_num(meta, k, str(jpath))) > 0 for k in _DISTORTION if meta.get(k)):
        warnings.warn(f"{jpath}: lens distortion coefficients are ignored", stacklevel=2)
    base = jpath.parent
    images, alphas, c2ws, fx, fy, cx, cy, ids, paths = [], [], [], [], [], [], [], [], []
    for i, fr in enumerate(frames):
        where = f"{jpath} frame {i}"
        if not isinstance(fr, dict) or "file_path" not in fr or "transform_matrix" not in fr:
            raise DataError(f"{where}: needs 'file_path' and 'transform_matrix'")
        img_path = _resolve_image(base, str(fr["file_path"]), where)
        img, alpha = load_image(img_path, background)
        try:
            m = np.asarray(fr["transform_matrix"], dtype=np.float64)
        except (TypeError, ValueError) as e:
            raise DataError(f"{where} ({img_path.name}): transform_matrix is not numeric") from e
        if m.shape == (3, 4):
            m = np.concatenate([m, [[0.0, 0.0, 0.0, 1.0]]])
        if m.shape != (4, 4):
            raise DataError(f"{where} ({img_path.name}): transform_matrix must be 4x4, "
                            f"got shape {m.shape}")
        c2ws.append(opengl_to_opencv(check_pose(m, f"{where} ({img_path.name})", pose_atol)))
        H, W = img.shape[:2]
        merged = {**meta, **fr}
        if "fl_x" in merged:
            fw = _num(merged, "w", where, positive=True) if "w" in merged else W
            fh = _num(merged, "h", where, positive=True) if "h" in merged else H
            if not (1 / 16 <= W / fw <= 2 and 1 / 16 <= H / fh <= 2):  # images_N: 1/N
                raise DataError(f"{where} ({img_path.name}): the file declares {fw:g}x{fh:g} "
                                f"('w', 'h') but the image is {W}x{H}")
            sx, sy = W / fw, H / fh
            f_x = _num(merged, "fl_x", where, positive=True)
            f_y = _num(merged, "fl_y", where, positive=True) if "fl_y" in merged else f_x
            c_x = _num(merged, "cx", where) if "cx" in merged else fw / 2.0
            c_y = _num(merged, "cy", where) if "cy" in merged else fh / 2.0
            f_x, f_y, c_x, c_y = f_x * sx, f_y * sy, c_x * sx, c_y * sy
        elif "camera_angle_x" in merged:
            f_x = 0.5 * W / math.tan(0.5 * _angle(merged, "camera_angle_x", where))
            if "camera_angle_y" in merged:
                f_y = 0.5 * H / math.tan(0.5 * _angle(merged, "camera_angle_y", where))
            else:
                f_y = f_x
            c_x, c_y = W / 2.0, H / 2.0
        else:
            raise DataError(f"{where}: no intrinsics (need 'fl_x' or 'camera_angle_x')")
        images.append(img)
        alphas.append(alpha)
        fx.append(f_x)
        fy.append(f_y)
        cx.append(c_x)
        cy.append(c_y)
        ids.append(img_path.stem)
        paths.append(img_path)
    name = base.name if jpath.name in ("transforms.json", "transforms_train.json") else (
        f"{base.name}:{jpath.stem.removeprefix('transforms_')}")
    obj = stack_views(jpath, name, images, alphas, np.stack(c2ws), fx, fy, cx, cy, resolution,
                      background, ids, paths)
    return obj


def write_transforms(obj: MultiViewObject, out: str | Path, link: bool = False) -> Path:
    """Write ``obj`` (as a reader returned it, at its files' own size) as a nerfstudio scene:
    ``out/transforms.json`` and its image files copied (``link``: symlinked) to
    ``out/images/<view id><suffix>``. Returns the json path.

    Cameras become OpenGL camera-to-world matrices (y and z flipped) in the source's world frame;
    intrinsics ``fl_x, fl_y, cx, cy, w, h`` in pixels (pixel centres at +0.5 in both
    conventions), at the top level when all views share them, else per frame, with
    ``camera_model: OPENCV`` and no distortion; ``camera_angle_x`` too when the views share
    intrinsics with a centred principal point (for Blender-style loaders).
    :func:`read_transforms` reads it back to the same cameras."""
    from PIL import Image

    if obj.image_paths is None:
        raise DataError(f"{obj.object_id}: the object has no image files to export")
    out = Path(out)
    cams = obj.cameras
    W, H = cams.width, cams.height
    sources = [Path(p) for p in obj.image_paths]
    for src in sources:
        with Image.open(src) as im:
            if im.size != (W, H):
                raise DataError(f"{src}: image is {im.size[0]}x{im.size[1]} but the cameras are "
                                f"for {W}x{H} (export objects read at their own resolution)")
    intr = np.stack([cams.fx.double().cpu().numpy(), cams.fy.double().cpu().numpy(),
                     cams.cx.double().cpu().numpy(), cams.cy.double().cpu().numpy()], 1)
    shared = bool((intr == intr[:1]).all())
    keys = ("fl_x", "fl_y", "cx", "cy")
    meta: dict[str, Any] = {"camera_model": "OPENCV"}
    if shared:
        meta.update({k: float(v) for k, v in zip(keys, intr[0], strict=True)}, w=W, h=H)
        if intr[0, 2] == W / 2 and intr[0, 3] == H / 2:
            meta["camera_angle_x"] = 2 * math.atan(0.5 * W / intr[0, 0])
            meta["camera_angle_y"] = 2 * math.atan(0.5 * H / intr[0, 1])
    c2w = opencv_to_opengl(cams.c2w.double().cpu().numpy())
    (out / "images").mkdir(parents=True, exist_ok=True)
    frames = []
    for i, (src, vid) in enumerate(zip(sources, obj.view_ids, strict=True)):
        rel = Path("images") / f"{vid}{src.suffix}"
        dst = out / rel
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        if link:
            dst.symlink_to(src.resolve())
        else:
            shutil.copyfile(src, dst)
        frame: dict[str, Any] = {"file_path": rel.as_posix(),
                                 "transform_matrix": c2w[i].tolist()}
        if not shared:
            frame.update({k: float(v) for k, v in zip(keys, intr[i], strict=True)}, w=W, h=H)
        frames.append(frame)
    meta["frames"] = frames
    path = out / "transforms.json"
    path.write_text(json.dumps(meta, indent=2) + "\n")
    return path
