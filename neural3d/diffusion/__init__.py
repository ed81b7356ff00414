"""2D diffusion: schedules, parameterisations, samplers, guidance and denoisers.

The noise schedule is stateless and separate from the network (as in diffusers): a sampler takes
any callable ``model(x_t, t, **cond)`` with ``t`` a float tensor ``[B]`` in ``[0, 1]``.

- :mod:`.schedules`: cosine / linear, continuous and discrete, resolution-shifted.
- :mod:`.parameterization`: eps / x0 / v conversions and the one training objective
  (:class:`DiffusionObjective`: schedule + parameterisation + loss weighting).
- :mod:`.samplers`: one loop (:func:`sample_loop`) driving DDPM, DDIM (+ inversion) and
  DPM-Solver++(2M) steps.
- :mod:`.guidance`: classifier-free (``uncond + w (cond - uncond)``), classifier, measurement
  guidance, thresholding.
- :mod:`.unet`, :mod:`.dit`: denoisers; :mod:`.mdm` Matryoshka Diffusion; :mod:`.fdm` f-DM.
- :mod:`.cascade`: cascaded diffusion (base + super-resolution model with Gaussian conditioning
  augmentation); :mod:`.autoencoder` + :mod:`.latent`: latent diffusion (KL autoencoder, then
  diffusion on its std-normalised latents).
- :mod:`.kaleido`: Kaleido (k-means latent extractor, autoregressive prior p(z|c), denoiser
  conditioned on (c, z)); :mod:`.dart`: DART (non-Markovian noising, block-causal transformer,
  KV-cached sampler).
"""

from neural3d.diffusion.autoencoder import KLAutoencoder, PatchDiscriminator, autoencoder_loss
from neural3d.diffusion.cascade import CascadedDiffusion, SRConditioned
from neural3d.diffusion.dart import DARTLevels, DARTransformer, KVCache, dart_loss, dart_sample
from neural3d.diffusion.dit import DiT
from neural3d.diffusion.fdm import FDM
from neural3d.diffusion.guidance import (
    ClassifierFreeGuidance,
    ClassifierGuidance,
    MeasurementGuidance,
    classifier_free_guidance,
    threshold_x0,
)
from neural3d.diffusion.kaleido import (
    ARPrior,
    Kaleido,
    KMeansExtractor,
    LatentConditioned,
    LatentEmbedding,
)
from neural3d.diffusion.latent import LatentDiffusion
from neural3d.diffusion.mdm import MatryoshkaDiffusion, NestedUNet
from neural3d.diffusion.parameterization import (
    DiffusionObjective,
    convert,
    diffusion_loss,
    to_eps,
    to_v,
    to_x0,
)
from neural3d.diffusion.samplers import (
    Denoiser,
    ddim_invert,
    ddim_sample,
    ddpm_sample,
    dpmpp_2m_sample,
    sample,
    sample_loop,
)
from neural3d.diffusion.schedules import (
    CosineSchedule,
    DiscreteSchedule,
    LinearSchedule,
    NoiseSchedule,
    ShiftedSchedule,
    make_schedule,
)
from neural3d.diffusion.unet import UNet, drop_labels

__all__ = [
    "ClassifierFreeGuidance", "ClassifierGuidance", "MeasurementGuidance",
    "classifier_free_guidance", "threshold_x0", "DiffusionObjective", "convert", "diffusion_loss",
    "to_eps", "to_v", "to_x0", "Denoiser", "ddim_invert", "ddim_sample", "ddpm_sample",
    "dpmpp_2m_sample", "sample", "sample_loop", "CosineSchedule", "DiscreteSchedule",
    "LinearSchedule", "NoiseSchedule", "ShiftedSchedule", "make_schedule", "UNet", "drop_labels",
    "DiT", "FDM", "MatryoshkaDiffusion", "NestedUNet", "DARTLevels", "DARTransformer", "KVCache",
    "dart_loss", "dart_sample", "ARPrior", "Kaleido", "KMeansExtractor", "LatentConditioned",
    "LatentEmbedding", "CascadedDiffusion", "SRConditioned", "KLAutoencoder",
    "PatchDiscriminator", "autoencoder_loss", "LatentDiffusion",
]
