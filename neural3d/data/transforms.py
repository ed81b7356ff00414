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
"""

from __future__ import annotations

import json
import math
import os
import warnings
from pathlib import Path, PureWindowsPath
from typing import Any

import numpy as np

from neural3d.cameras import opengl_to_opencv
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
