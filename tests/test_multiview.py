"""Shared multi-view training data: uint8 storage, float views, ray draws."""

import torch

from neural3d.data import SRNCategory
from neural3d.methods.multiview import conditioned_batch, draw_rays, load_split, to_uint8
from neural3d.methods.ssdnerf.config import tiny_config


def test_training_images_are_stored_as_uint8_and_handed_out_as_float(tmp_path):
    cfg = tiny_config(tmp_path / "d", tmp_path / "r")
    data = load_split(cfg.data, "train")
    assert data.images.dtype == torch.uint8
    cat = SRNCategory(tmp_path / "d", cfg.data.category, "train")
    obj = cat.read(data.object_ids[1])
    images, cams = data.views(1)
    assert images.dtype == torch.float32 and images.shape == obj.images.shape
    assert (images - obj.images).abs().max() <= 0.5 / 255 + 1e-7     # 8-bit files: rounding
    assert torch.equal(to_uint8(images), to_uint8(obj.images))
    g = torch.Generator().manual_seed(0)
    _, _, rgb = draw_rays(data, data.offsets[1] + torch.zeros(5, dtype=torch.long), g)
    assert rgb.dtype == torch.float32 and 0 <= rgb.min() and rgb.max() <= 1
    b = conditioned_batch(data, 2, 8, g)
    assert b.images.dtype == torch.float32 and b.rgb.dtype == torch.float32
