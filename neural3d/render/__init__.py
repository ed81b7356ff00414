"""Volume rendering: samplers, the ``VolumeRenderer`` and the compositing kernels' Python face.

Backends (fused CUDA, fused C++ CPU, torch reference) are chosen in
:mod:`neural3d.render.backend`; ``NEURAL3D_BACKEND=torch|cpp|cuda`` forces one.
"""

from neural3d.render.composite import (
    CompositeResult,
    composite,
    composite_alphas,
    composite_packed,
)
from neural3d.render.image import render_image
from neural3d.render.occupancy import (
    OccupancyGridSampler,
    OccupiedSpanSampler,
    density_threshold,
    grid_bounds,
    visual_hull,
)
from neural3d.render.renderer import RendererConfig, VolumeRenderer, default_sampler
from neural3d.render.samplers import (
    ImportanceSampler,
    RaySamples,
    Sampler,
    StratifiedSampler,
    importance_samples,
    near_far_aabb,
    near_far_sphere,
    sample_pdf,
    stratified_samples,
)

__all__ = [
    "CompositeResult",
    "ImportanceSampler",
    "OccupancyGridSampler",
    "OccupiedSpanSampler",
    "RaySamples",
    "RendererConfig",
    "Sampler",
    "StratifiedSampler",
    "VolumeRenderer",
    "composite",
    "composite_alphas",
    "composite_packed",
    "default_sampler",
    "density_threshold",
    "grid_bounds",
    "importance_samples",
    "near_far_aabb",
    "near_far_sphere",
    "render_image",
    "sample_pdf",
    "stratified_samples",
    "visual_hull",
]
