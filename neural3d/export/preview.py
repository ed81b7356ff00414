"""Contact sheets of SRN-layout datasets (``neural3d data preview``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from neural3d.data.core import IMAGE_EXTS, DataError, load_image
from neural3d.data.srn import is_srn_object
from neural3d.export.media import write_image_rows


def _objects(root: Path, per_split: int) -> list[Path]:
    """The object folders to show: ``root`` itself when it is one object, else up to
    ``per_split`` objects from each split folder of a dataset root (or of a split folder)."""
    if is_srn_object(root):
        return [root]
    splits = [p for p in sorted(root.iterdir()) if p.is_dir() and "_" in p.name
              and any(is_srn_object(q) for q in p.iterdir() if q.is_dir())]
    if not splits and any(is_srn_object(q) for q in root.iterdir() if q.is_dir()):
        splits = [root]
    return [obj for split in splits for obj in
            [p for p in sorted(split.iterdir()) if p.is_dir() and is_srn_object(p)][:per_split]]


def contact_sheet(root: str | Path, out: str | Path | None = None, objects: int = 4,
                  views: int = 6, tile: int = 96) -> Path:
    """Write a PNG grid (one row per object, ``views`` evenly spaced views per row, up to
    ``objects`` objects from each split folder of ``root``, or just ``root`` when it is an
    object folder) and return its path (default ``root/preview.png``)."""
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder is missing")
    objs = _objects(root, objects)
    if not objs:
        raise DataError(f"{root}: no SRN-layout objects found (<split>/<object>/rgb)")
    rows: list[torch.Tensor] = []
    for obj in objs:
        imgs = sorted(p for p in (obj / "rgb").iterdir() if p.suffix in IMAGE_EXTS)
        if not imgs:
            continue
        pick = np.unique(np.linspace(0, len(imgs) - 1, min(views, len(imgs))).round())
        row = []
        for i in pick.astype(int):
            img, _ = load_image(imgs[i])
            im = Image.fromarray((img[..., :3] * 255 + 0.5).astype(np.uint8))
            small = np.asarray(im.resize((tile, tile), Image.Resampling.LANCZOS))
            row.append(torch.from_numpy(small.astype(np.float32) / 255))
        rows.append(torch.stack(row))
    if not rows:
        raise DataError(f"{root}: no images found")
    out = root / "preview.png" if out is None else Path(out)
    return write_image_rows(out, rows, pad=2, pad_value=200 / 255)
