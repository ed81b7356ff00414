"""Unposed image collections (FFHQ, AFHQ, CompCars style): a folder of images, resized on load.

``ImageFolder(root, resolution)`` lists every image file under ``root`` (recursively, sorted by
relative path); ``load()`` reads them as ``[N, R, R, 3]`` float32 in [0, 1], each centre-cropped
to a square (``crop=True``) and resized to ``resolution`` (antialiased). A file that cannot be
read raises :class:`DataError` naming it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from neural3d.data.core import IMAGE_EXTS, WHITE, Background, DataError, load_image, resize_images


class ImageFolder:
    """The images under ``root`` (see the module docstring); ``max_images`` keeps the first."""

    def __init__(self, root: str | Path, resolution: int, crop: bool = True,
                 background: Background = WHITE, max_images: int | None = None):
        self.root = Path(root)
        if not self.root.is_dir():
            raise DataError(f"{self.root}: image folder is missing")
        if resolution < 1:
            raise DataError(f"{self.root}: resolution must be positive, got {resolution}")
        files = sorted(p for p in self.root.rglob("*") if p.is_file() and p.suffix in IMAGE_EXTS)
        if not files:
            raise DataError(f"{self.root}: no images found (looked for "
                            f"{', '.join(sorted(set(e.lower() for e in IMAGE_EXTS)))})")
        self.files = files[:max_images] if max_images else files
        self.resolution, self.crop, self.background = resolution, crop, background

    def __len__(self) -> int:
        return len(self.files)

    def read(self, i: int) -> torch.Tensor:
        """Image ``i`` as ``[R, R, 3]``."""
        img = torch.from_numpy(load_image(self.files[i], self.background)[0])
        h, w = img.shape[:2]
        if self.crop and h != w:
            s = min(h, w)
            y, x = (h - s) // 2, (w - s) // 2
            img = img[y:y + s, x:x + s]
        elif h != w:
            raise DataError(f"{self.files[i]}: image is {w}x{h}, not square (crop=False)")
        return resize_images(img[None], (self.resolution, self.resolution))[0]

    def load(self) -> torch.Tensor:
        """All images ``[N, R, R, 3]``."""
        return torch.stack([self.read(i) for i in range(len(self))])

    def __repr__(self) -> str:
        return f"ImageFolder({str(self.root)!r}, {len(self)} images, {self.resolution} px)"
