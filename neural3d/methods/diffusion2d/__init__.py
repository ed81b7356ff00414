"""2D diffusion models (U-Net, DiT, Matryoshka Diffusion, f-DM) on class-labelled images, as a
registered method: ``neural3d train diffusion --config configs/diffusion_toy_unet.yaml``
(shortcut: ``neural3d diffusion train``), ``neural3d sample diffusion CKPT``.

- :mod:`.config` — :class:`DiffusionExperiment` (YAML in ``configs/diffusion_*.yaml``).
- :mod:`.pipeline` — :class:`DiffusionPipeline`: network + schedule + loss + sampling.
- :mod:`.data` — the toy categories' renders as labelled images in [-1, 1].
- :mod:`.method` — :class:`Diffusion2D`, the registered method.
"""

from neural3d.methods.diffusion2d.config import DiffusionExperiment
from neural3d.methods.diffusion2d.data import ensure_toy_data, load_toy_images
from neural3d.methods.diffusion2d.method import Diffusion2D
from neural3d.methods.diffusion2d.pipeline import DiffusionPipeline

__all__ = ["Diffusion2D", "DiffusionExperiment", "DiffusionPipeline", "ensure_toy_data",
           "load_toy_images"]
