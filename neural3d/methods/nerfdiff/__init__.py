"""NerfDiff (Gu et al., ICML 2023): single-image NeRF, 3D-aware conditional diffusion (CDM) and
NeRF-guided distillation (NGD). No public code exists; this is our implementation of the paper.

- :mod:`.config` — :class:`NerfDiffConfig` (YAML in ``configs/nerfdiff_*.yaml``).
- :mod:`.frustum` — frustum coordinates of the input camera (camera-aligned triplanes).
- :mod:`.model` — :class:`NerfDiffModel`: image encoder -> planes -> MLP, rendered by the shared
  renderer; the CDM U-Net conditioned on the NeRF's render.
- :mod:`.distill` — test time: NGD and its ablations (:data:`MODES`).
- :mod:`.method` — :class:`NerfDiff`, the registered method (``neural3d train|eval
  nvs|reconstruct nerfdiff``).

Where we deviate from the paper (sizes aside): planes at the input resolution from the shared
diffusion U-Net run at t = 0 (the paper's encoder is its own U-Net); the third plane is the
transposed encoder map (so every plane shares an image axis); the CDM sees the NeRF render only
(``cdm.condition_on_input`` adds the input view by concatenation; the paper attends to it);
virtual views on an orbit at the input's distance; fine-tuning on random rays of all virtual
views per Adam step.
"""

from neural3d.methods.nerfdiff.config import NerfDiffConfig, tiny_config
from neural3d.methods.nerfdiff.distill import MODES, NerfDiffState, distill, ngd_blend
from neural3d.methods.nerfdiff.method import NerfDiff
from neural3d.methods.nerfdiff.model import NerfDiffModel

__all__ = ["MODES", "NerfDiff", "NerfDiffConfig", "NerfDiffModel", "NerfDiffState", "distill",
           "ngd_blend", "tiny_config"]
