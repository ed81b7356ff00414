"""SSDNeRF (Chen et al., ICCV 2023): single-stage diffusion NeRF.

- :mod:`.config` — :class:`SSDNeRFConfig` (YAML in ``configs/ssdnerf_*.yaml``).
- :mod:`.model` — :class:`SSDNeRFModel`: shared triplane decoder + U-Net over stacked triplanes,
  v-prediction diffusion loss with ``snr ** omega`` weighting, sampling, rendering.
- :mod:`.latents` — :class:`LatentCache` (RAM or file-backed) and :class:`LatentAdam`
  (per-object Adam state; only the batch's rows go to the device).
- :mod:`.train` — the training step (single-stage / two-stage), :func:`train`,
  :func:`load_ssdnerf`.
- :mod:`.recon` — reconstruction-guided sampling and prior fine-tuning (:func:`reconstruct`).
- :mod:`.method` — :class:`SSDNeRF`, the registered method (``neural3d train|sample|eval
  ssdnerf``).
"""

from neural3d.methods.multiview import MultiObjectSet, ensure_data, load_split
from neural3d.methods.ssdnerf.config import SSDNeRFConfig
from neural3d.methods.ssdnerf.latents import LatentAdam, LatentCache
from neural3d.methods.ssdnerf.method import SSDNeRF
from neural3d.methods.ssdnerf.model import SSDNeRFModel
from neural3d.methods.ssdnerf.recon import MODES, finetune, guided_sample, reconstruct
from neural3d.methods.ssdnerf.train import build, load_ssdnerf, make_step_fn, train

__all__ = ["SSDNeRFConfig", "LatentAdam", "LatentCache", "SSDNeRF", "SSDNeRFModel", "MODES",
           "finetune", "guided_sample", "reconstruct", "MultiObjectSet", "build", "ensure_data",
           "load_split", "load_ssdnerf", "make_step_fn", "train"]
