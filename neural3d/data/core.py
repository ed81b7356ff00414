"""The multi-view record every reader returns, the data error type, and image helpers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from neural3d.cameras import Cameras, is_rigid

Background = tuple[float, float, float]
WHITE: Background = (1.0, 1.0, 1.0)
#: image file endings the readers look for (SRN ``rgb/``, nerfstudio frames without a suffix)
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


class DataError(ValueError):
    """Bad or missing input data. The message names the offending file."""


@dataclass(eq=False)
class MultiViewObject:
    """One object (or scene) seen from ``V`` views.

    ``images [V,H,W,3]`` float32 in [0, 1], already composited on ``background``;
    ``cameras`` (``V`` cameras, OpenCV c2w); ``object_id``; ``view_ids`` (file stems);
    ``masks [V,H,W]`` float32 in [0, 1] (alpha) or None when the source has no alpha/mask;
    ``image_paths``: the image file of each view (None for objects made in memory).
    """

    images: torch.Tensor
    cameras: Cameras
    object_id: str
    view_ids: list[str]
    masks: torch.Tensor | None = None
    background: Background = WHITE
    path: str | None = field(default=None, compare=False)
    image_paths: list[str] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        v = self.images.shape[0]
        if len(self.cameras) != v or len(self.view_ids) != v:
            raise ValueError(f"MultiViewObject {self.object_id}: {v} images, "
                             f"{len(self.cameras)} cameras, {len(self.view_ids)} view ids")

    def __len__(self) -> int:
        return self.images.shape[0]

    def select(self, idx: Any) -> MultiViewObject:
        """A subset of the views (``idx``: int list, slice or tensor)."""
        if isinstance(idx, int):
            idx = [idx]
        ids = torch.arange(len(self))[idx].reshape(-1).tolist()
        return MultiViewObject(self.images[ids], self.cameras[torch.tensor(ids)], self.object_id,
                               [self.view_ids[i] for i in ids],
                               None if self.masks is None else self.masks[ids], self.background,
                               self.path, None if self.image_paths is None else
                               [self.image_paths[i] for i in ids])


def parse_resolution(resolution: Any) -> tuple[int, int] | None:
    """``None`` | ``R`` (square R x R) | ``(H, W)`` -> ``(H, W)`` or None."""
    if resolution is None:
        return None
    if isinstance(resolution, (int, np.integer)):
        h = w = int(resolution)
    else:
        h, w = (int(x) for x in resolution)
    if h <= 0 or w <= 0:
        raise ValueError(f"resolution must be positive, got {resolution!r}")
    return h, w


def load_image(path: str | Path, background: Background = WHITE
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """Read an image file as float32 ``[H,W,3]`` in [0, 1] composited on ``background``,
    plus its alpha ``[H,W]`` (None if the file has no alpha). Raises :class:`DataError`."""
    import imageio.v3 as iio

    path = Path(path)
    if not path.is_file():
        if path.is_symlink():
            raise DataError(f"{path}: image is a symlink that leads to no file (broken or a "
                            "loop)")
        raise DataError(f"{path}: image file is missing")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: image file is empty (0 bytes)")
    try:
        arr = np.asarray(iio.imread(path))
    except Exception as e:  # noqa: BLE001 - any decoder error is a data error
        raise DataError(f"{path}: cannot read image ({type(e).__name__}: {e})") from e
    if arr.dtype == np.uint8:
        img = arr.astype(np.float32) / 255.0
    elif arr.dtype == np.uint16:
        img = arr.astype(np.float32) / 65535.0
    elif arr.dtype.kind == "f":
        img = arr.astype(np.float32)
    else:
        raise DataError(f"{path}: unsupported pixel type {arr.dtype}")
    if img.ndim == 2:
        img = img[..., None]
    if img.ndim != 3 or img.shape[-1] not in (1, 2, 3, 4) or min(img.shape[:2]) == 0:
        raise DataError(f"{path}: unsupported image shape {arr.shape}")
    alpha = None
    if img.shape[-1] in (2, 4):
        alpha = img[..., -1]
        img = img[..., :-1]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    if alpha is not None:
        bg = np.asarray(background, dtype=np.float32)
        img = img * alpha[..., None] + bg * (1.0 - alpha[..., None])
    return np.ascontiguousarray(np.clip(img, 0.0, 1.0), dtype=np.float32), alpha


def resize_images(images: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Antialiased resize of ``[V,H,W,C]`` (or ``[V,H,W]``) float images to ``size = (H, W)``:
    area averaging for integer downscales, antialiased bilinear otherwise."""
    squeeze = images.ndim == 3
    x = images[..., None] if squeeze else images
    h, w = x.shape[1:3]
    if (h, w) == tuple(size):
        return images
    x = x.permute(0, 3, 1, 2)
    if h % size[0] == 0 and w % size[1] == 0:
        y = F.interpolate(x, size=size, mode="area")
    else:
        y = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    y = y.clamp(0.0, 1.0).permute(0, 2, 3, 1).contiguous()
    return y[..., 0] if squeeze else y


def check_pose(m: np.ndarray, path: str | Path, atol: float = 1e-3) -> np.ndarray:
    ok, why = is_rigid(m, atol=atol)
    if not ok:
        raise DataError(f"{path}: pose is not a rigid camera-to-world transform: {why}")
    return np.asarray(m, dtype=np.float64)


def stack_views(path: str | Path, object_id: str, images: list[np.ndarray],
                alphas: list[np.ndarray | None], c2w: np.ndarray, fx: Any, fy: Any, cx: Any,
                cy: Any, resolution: Any, background: Background, view_ids: list[str],
                image_paths: list[Path]) -> MultiViewObject:
    """Common tail of the readers: check sizes, resize on request, build the record."""
    if not images:
        raise DataError(f"{path}: object has no images")
    size = parse_resolution(resolution)
    h, w = images[0].shape[:2]
    n = len(images)
    fx, fy, cx, cy = (np.broadcast_to(np.asarray(a, dtype=np.float64), (n,)).copy()
                      for a in (fx, fy, cx, cy))
    for i, im in enumerate(images):
        if im.shape[:2] != (h, w):
            if size is None:
                raise DataError(f"{image_paths[i]}: image is {im.shape[1]}x{im.shape[0]} but "
                                f"{image_paths[0]} is {w}x{h}; pass resolution= to resize all")
    per_view: list[torch.Tensor] = []
    per_mask: list[torch.Tensor] = []
    has_alpha = all(a is not None for a in alphas)
    for i, im in enumerate(images):
        t = torch.from_numpy(im)[None]
        a = torch.from_numpy(alphas[i])[None] if has_alpha else None
        ih, iw = im.shape[:2]
        if size is not None and (ih, iw) != size:
            t = resize_images(t, size)
            a = resize_images(a, size) if a is not None else None
            sx, sy = size[1] / iw, size[0] / ih
            fx[i] *= sx
            cx[i] *= sx
            fy[i] *= sy
            cy[i] *= sy
        per_view.append(t)
        if a is not None:
            per_mask.append(a)
    H, W = per_view[0].shape[1:3]
    cams = Cameras(torch.as_tensor(c2w, dtype=torch.float32), fx, fy, cx, cy, W, H)
    return MultiViewObject(torch.cat(per_view), cams, object_id, view_ids,
                           masks=torch.cat(per_mask) if has_alpha else None,
                           background=tuple(background), path=str(path),
                           image_paths=[str(p) for p in image_paths])
