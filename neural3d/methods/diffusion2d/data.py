"""Training images of the 2D diffusion models: the toy categories' renders, class-labelled."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from neural3d.methods.diffusion2d.config import DataConfig


def ensure_toy_data(data_cfg: DataConfig, progress: bool = True) -> Path:
    """Write the toy categories into ``data.root`` unless they are already there (same
    resolution, seed, views, supersampling and object count)."""
    from neural3d.data.toy import write_toy_dataset

    root = Path(data_cfg.root)
    summary = root / "toy_dataset.json"
    have = json.loads(summary.read_text()).get("categories", {}) if summary.is_file() else {}
    for cat in data_cfg.categories:
        info = have.get(cat, {})
        ok = (info.get("res") == data_cfg.res and info.get("seed") == data_cfg.seed
              and info.get("views") == data_cfg.views
              and info.get("supersample", 1) == data_cfg.supersample
              and len(info.get("splits", {}).get(f"{cat}_train", [])) == data_cfg.objects)
        if not ok:
            write_toy_dataset(root, cat, objects=data_cfg.objects, views=data_cfg.views,
                              test_views=0, res=data_cfg.res, seed=data_cfg.seed,
                              supersample=data_cfg.supersample, progress=progress)
    return root


def load_toy_images(data_cfg: DataConfig, progress: bool = True
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [N,3,res,res] in [-1,1], labels [N])`` from the toy renders (written if
    missing); labels index ``data.categories``."""
    import numpy as np
    from PIL import Image

    from neural3d.data import DataError
    from neural3d.data.core import IMAGE_EXTS

    root = ensure_toy_data(data_cfg, progress)
    images, labels = [], []
    for label, cat in enumerate(data_cfg.categories):
        files = sorted(f for f in (root / f"{cat}_train").glob("*/rgb/*") if f.suffix in IMAGE_EXTS)
        if not files:
            raise DataError(f"{root / (cat + '_train')}: no training renders")
        for f in files:
            with Image.open(f) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            if arr.shape[0] != data_cfg.res:
                raise DataError(f"{f}: {arr.shape[0]} px, config data.res={data_cfg.res}")
            images.append(arr)
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x.contiguous(), torch.tensor(labels, dtype=torch.long)
