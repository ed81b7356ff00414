"""Contact sheets of SRN-layout datasets (``neural3d data preview``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from neural3d.data.core import DataError, load_image
from neural3d.data.srn import IMAGE_EXTS, is_srn_object


def _split_dirs(root: Path) -> list[Path]:
    if is_srn_object(root):
        return [root.parent]
    dirs = [p for p in sorted(root.iterdir()) if p.is_dir() and "_" in p.name
            and any(is_srn_object(q) for q in p.iterdir() if q.is_dir())]
    if not dirs and any(is_srn_object(q) for q in root.iterdir() if q.is_dir()):
        dirs = [root]
    return dirs


def contact_sheet(root: str | Path, out: str | Path | None = None, objects: int = 4,
                  views: int = 6, tile: int = 96) -> Path:
    """Write a PNG grid (one row per object, ``views`` evenly spaced views per row, up to
    ``objects`` objects from each split folder of ``root``) and return its path
    (default ``root/preview.png``)."""
    from PIL import Image

    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder is missing")
    splits = _split_dirs(root)
    if not splits:
        raise DataError(f"{root}: no SRN-layout objects found (<split>/<object>/rgb)")
    rows: list[list[np.ndarray]] = []
    for split in splits:
        objs = [p for p in sorted(split.iterdir()) if p.is_dir() and is_srn_object(p)]
        for obj in objs[:objects]:
            imgs = sorted(p for p in (obj / "rgb").iterdir() if p.suffix in IMAGE_EXTS)
            if not imgs:
                continue
            pick = np.unique(np.linspace(0, len(imgs) - 1, min(views, len(imgs))).round())
            row = []
            for i in pick.astype(int):
                img, _ = load_image(imgs[i])
                im = Image.fromarray((img * 255 + 0.5).astype(np.uint8))
                row.append(np.asarray(im.resize((tile, tile), Image.Resampling.LANCZOS)))
            rows.append(row)
    if not rows:
        raise DataError(f"{root}: no images found")
    ncol = max(len(r) for r in rows)
    pad = 2
    sheet = np.full((len(rows) * (tile + pad) + pad, ncol * (tile + pad) + pad, 3), 200,
                    np.uint8)
    for r, row in enumerate(rows):
        for c, im in enumerate(row):
            y, x = pad + r * (tile + pad), pad + c * (tile + pad)
            sheet[y:y + tile, x:x + tile] = im[..., :3]
    out = root / "preview.png" if out is None else Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(sheet).save(out)
    return out
