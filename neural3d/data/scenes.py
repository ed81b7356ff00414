"""Splits and scene boxes of single-object data, as each layout defines them.

- :func:`holdout_split`: every ``every``-th view held out (views 0, every, 2·every, ...), the
  rest for training; used where a layout has no split of its own (SRN object folders,
  nerfstudio captures).
- :func:`train_and_heldout`: a Blender scene trains on ``transforms_train.json`` and is scored on
  ``transforms_test.json``, as NeRF papers report; other layouts use :func:`holdout_split`.
- :func:`toy_aabb` / :func:`camera_aabb`: a box that holds the object: the toy dataset's
  recorded box, else a cube scaled from the camera distances.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from neural3d.cameras import Cameras
from neural3d.data.core import DataError, MultiViewObject


def holdout_split(n_views: int, every: int) -> tuple[list[int], list[int]]:
    """``(train, held)`` view indices: every ``every``-th view held out. With fewer than 2 views
    or ``every < 2`` nothing is held out."""
    idx = list(range(n_views))
    if n_views < 2 or every < 2:
        return idx, []
    held = idx[::every]
    return [i for i in idx if i % every != 0], held


def is_blender_scene(path: str | Path) -> bool:
    """A folder with ``transforms_train.json`` (the NeRF-synthetic layout)."""
    return (Path(path) / "transforms_train.json").is_file()


def train_and_heldout(path: str | Path, every: int = 8, resolution: Any = None,
                      eval_path: str | Path | None = None
                      ) -> tuple[MultiViewObject, MultiViewObject | None, str]:
    """Training views and held-out views of one object or scene, and a line saying where the
    held-out views come from. ``eval_path`` (any layout) overrides the default."""
    from neural3d.data import read_object

    if eval_path is not None:
        held = read_object(eval_path, resolution=resolution)
        return read_object(path, resolution=resolution), held, \
            f"{len(held)} views from {eval_path}"
    if is_blender_scene(path):
        train = read_object(path, resolution=resolution, split="train")
        test = Path(path) / "transforms_test.json"
        if not test.is_file():
            return train, None, f"no held-out views ({test} is missing)"
        held = read_object(path, resolution=resolution, split="test")
        return train, held, f"{len(held)} views of transforms_test.json"
    data = read_object(path, resolution=resolution)
    tr, held_idx = holdout_split(len(data), every)
    held = data.select(held_idx) if held_idx else None
    return data.select(tr), held, f"every {every}th view held out ({len(held_idx)})"


def toy_aabb(path: str | Path | None) -> torch.Tensor | None:
    """The box ``[6]`` recorded in ``toy_dataset.json`` when ``path`` lies in a toy dataset
    (the file in ``path`` or up to three folders above), else None."""
    if not path:
        return None
    p = Path(path).resolve()
    for parent in [p, *list(p.parents)[:3]]:
        meta = parent / "toy_dataset.json"
        if meta.is_file():
            try:
                lo, hi = json.loads(meta.read_text())["aabb"]
                return torch.tensor([*lo, *hi], dtype=torch.float32)
            except (KeyError, ValueError, TypeError) as exc:
                raise DataError(f"{meta}: no readable 'aabb' ({exc})") from exc
    return None


def camera_aabb(cams: Cameras) -> torch.Tensor:
    """A cube about the origin with half-size 0.6 x the nearest camera's distance."""
    half = 0.6 * float(cams.centers.norm(dim=-1).min())
    return torch.tensor([-half] * 3 + [half] * 3, dtype=torch.float32)


def scale_aabb(box: torch.Tensor, factor: float) -> torch.Tensor:
    """``box [6]`` scaled about its centre."""
    mid, half = (box[:3] + box[3:]) / 2, (box[3:] - box[:3]) / 2 * factor
    return torch.cat([mid - half, mid + half])
