"""pixelNeRF-lite (Yu et al., CVPR 2021): NeRF from one or few images through pixel-aligned
CNN features; the single-image baseline NerfDiff is compared against.

- :mod:`.config` — :class:`PixelNeRFConfig` (YAML in ``configs/pixelnerf_*.yaml``).
- :mod:`.model` — :class:`PixelNeRFModel`: image encoder, projection into the input views,
  ResNet-FC coarse/fine fields, rendering through :class:`~neural3d.render.VolumeRenderer`.
- :mod:`.method` — :class:`PixelNeRF`, the registered method (``neural3d train|eval
  pixelnerf``).

Where it deviates from pixelNeRF (reference code sxyu/pixel-nerf):

- Encoder: trained from scratch (no ImageNet weights), a "lite" ResNet (7x7 stride-2 stem, one
  stride-2 basic block per further scale, GroupNorm instead of BatchNorm for small batches);
  the concatenation of the upsampled maps at H/2 is the paper's. The paper-scale config uses
  ResNet34's widths (64-64-128-256) but one block per scale, not 3-4-6.
- Fine sampling: ``n_importance`` samples drawn from the coarse weights (the shared
  :class:`~neural3d.render.ImportanceSampler`, coarse samples kept: the fine network sees
  ``n_samples + n_importance``), without pixelNeRF's extra 16 of its 32 fine samples drawn
  around the coarse expected depth (``n_fine_depth``, ``depth_std`` 0.01).
- Ray bounds: the object box ``model.aabb`` (pixelNeRF: fixed near/far 0.8-1.8 for SRN);
  background white. No bounding-box ray sampling in early training (pixelNeRF samples rays in
  the object's 2D box for the first 100k steps).
- Encoding: our :class:`~neural3d.fields.encodings.PositionalEncoding` (frequencies
  ``pi 2^k``) of ``xyz * freq_factor / pi``, i.e. pixelNeRF's ``freq_factor 2^k``; its
  included input is thus scaled by ``freq_factor / pi``.
"""

from neural3d.methods.pixelnerf.config import PixelNeRFConfig, tiny_config
from neural3d.methods.pixelnerf.method import PixelNeRF
from neural3d.methods.pixelnerf.model import Encoded, PixelNeRFModel, ResnetFC

__all__ = ["Encoded", "PixelNeRF", "PixelNeRFConfig", "PixelNeRFModel", "ResnetFC",
           "tiny_config"]
