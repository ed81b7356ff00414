"""Writing what people look at: image grids (PNG) and videos (mp4, GIF without ffmpeg).

Images are float tensors in [0, 1], channels last (``[H, W, 3]``), as everywhere at the data
boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images in [0, 1] (any leading shape, channels last) -> rounded uint8 array."""
    return (images.detach().cpu().float().clamp(0, 1).numpy() * 255 + 0.5).astype(np.uint8)


def tile_rows(rows: Sequence[torch.Tensor], pad: int = 0, pad_value: float = 1.0) -> torch.Tensor:
    """Rows of images ``[k_i, H, W, C]`` (floats in [0, 1]; C = 1 is grey, channels past 3 are
    dropped) -> one image
    ``[R*(H+pad)+pad, K*(W+pad)+pad, 3]`` on the CPU, row ``i`` left to right (``K`` the longest
    row; shorter rows are filled with ``pad_value``); ``pad`` pixels of ``pad_value`` around
    every tile. A ``[R, K, H, W, C]`` tensor is ``R`` rows."""
    if not len(rows) or any(r.dim() != 4 or r.shape[-1] == 2 for r in rows):
        raise ValueError("tile_rows takes rows of [k, H, W, 1 or >= 3] images, got "
                         f"{[list(r.shape) for r in rows]}")
    k = max(r.shape[0] for r in rows)
    h, w = rows[0].shape[1:3]
    canvas = torch.full((len(rows) * (h + pad) + pad, k * (w + pad) + pad, 3), float(pad_value))
    for i, row in enumerate(rows):
        for j, img in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            canvas[y:y + h, x:x + w] = img.detach().cpu().float()[..., :3]
    return canvas


def write_image_rows(path: str | Path, rows: Sequence[torch.Tensor], pad: int = 0,
                     pad_value: float = 1.0) -> Path:
    """:func:`tile_rows` written as one PNG (creates the folder; returns the path)."""
    import imageio.v3 as iio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    iio.imwrite(path, to_uint8(tile_rows(rows, pad, pad_value)))
    return path


def write_labelled(path: str | Path, items: Sequence[tuple[str, str | Path]],
                   across: bool = False, label_height: int = 14) -> Path:
    """PNG files ``items = [(label, file), ...]`` each under a one-line label, stacked top to
    bottom (or left to right with ``across``), written to ``path`` (returned)."""
    from PIL import Image, ImageDraw

    images = [Image.open(f).convert("RGB") for _, f in items]
    if across:
        size = (sum(i.width for i in images), max(i.height for i in images) + label_height)
    else:
        size = (max(i.width for i in images), sum(i.height + label_height for i in images))
    canvas = Image.new("RGB", size, "white")
    draw, at = ImageDraw.Draw(canvas), 0
    for (label, _), im in zip(items, images, strict=True):
        x, y = (at, 0) if across else (0, at)
        draw.text((x + 2, y + 1), label, fill="black")
        canvas.paste(im, (x, y + label_height))
        at += im.width if across else im.height + label_height
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)
    return Path(path)


def write_video(path: str | Path, frames: Sequence[torch.Tensor] | torch.Tensor,
                fps: int = 24) -> Path:
    """Frames ``[T, H, W, 3]`` (a tensor or a list of ``[H, W, 3]``) -> mp4 through imageio-ffmpeg;
    a .gif next to it when ffmpeg is unavailable. Returns the path written."""
    import imageio.v2 as iio

    arr = [to_uint8(f) for f in frames]
    path = Path(path)
    if path.suffix.lower() == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401

            h, w = arr[0].shape[:2]
            block = 16 if (h % 16 == 0 and w % 16 == 0) else 1
            iio.mimwrite(path, arr, fps=fps, macro_block_size=block, quality=8)
            return path
        except Exception:  # noqa: BLE001 - no ffmpeg: fall back to gif
            path = path.with_suffix(".gif")
    iio.mimwrite(path, arr, duration=1000 / fps, loop=0)
    return path
