"""Datasets: readers for SRN ShapeNet / ABO (SRN layout), Blender and nerfstudio scenes, and
the built-in procedural toy category (:mod:`neural3d.data.toy`); unposed image folders
(:class:`ImageFolder`, FFHQ/AFHQ/CompCars style) for the 3D-aware GANs.

Every reader returns a :class:`MultiViewObject` (images ``[V,H,W,3]`` in [0, 1] on an explicit
background, OpenCV :class:`~neural3d.cameras.Cameras`). Bad input raises :class:`DataError`
naming the file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from neural3d.data.core import WHITE, DataError, MultiViewObject, load_image, resize_images
from neural3d.data.folder import ImageFolder
from neural3d.data.srn import (
    ABOCategory,
    SRNCategory,
    is_srn_object,
    read_posed_image,
    read_srn_intrinsics,
    read_srn_object,
    read_srn_pose,
)
from neural3d.data.transforms import read_transforms

__all__ = [
    "WHITE",
    "DataError",
    "MultiViewObject",
    "SRNCategory",
    "ABOCategory",
    "ImageFolder",
    "read_object",
    "read_srn_object",
    "read_posed_image",
    "read_srn_intrinsics",
    "read_srn_pose",
    "read_transforms",
    "load_image",
    "resize_images",
]


def read_object(path: str | Path, resolution: Any = None, background: Any = None,
                split: str | None = None) -> MultiViewObject:
    """Read one object/scene, detecting the layout: an SRN/ABO object folder
    (``intrinsics.txt``, ``rgb/``, ``pose/``), a Blender scene (``transforms_<split>.json``,
    ``split`` defaults to ``train``) or a nerfstudio folder / any ``transforms*.json`` file."""
    p = Path(path)
    if p.is_dir() and is_srn_object(p):
        return read_srn_object(p, resolution, background)
    if (p.is_file() and p.suffix == ".json") or (p.is_dir() and any(p.glob("transforms*.json"))):
        return read_transforms(p, split, resolution, background)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    hint = ""
    if p.is_dir() and any(q.is_dir() and is_srn_object(q) for q in p.iterdir()):
        hint = "; this looks like a split folder: use SRNCategory to list its objects"
    elif p.is_dir() and any(q.is_dir() and q.name.rsplit("_", 1)[-1] in ("train", "val", "test")
                            for q in p.iterdir()):
        hint = "; this looks like a dataset root: use SRNCategory(root, category, split)"
    raise DataError(f"{p}: unrecognised layout (expected an SRN object folder with "
                    f"intrinsics.txt/rgb/pose, or a transforms.json / transforms_<split>.json)"
                    f"{hint}")
