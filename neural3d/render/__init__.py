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
from neural3d.render.renderer import RendererConfig, VolumeRenderer
from neural3d.render.samplers import (
    importance_samples,
    near_far_aabb,
    near_far_sphere,
    sample_pdf,
    stratified_samples,
)

__all__ = [
    "CompositeResult",
    "RendererConfig",
    "VolumeRenderer",
    "composite",
    "composite_alphas",
    "composite_packed",
    "importance_samples",
    "near_far_aabb",
    "near_far_sphere",
    "sample_pdf",
    "stratified_samples",
]
