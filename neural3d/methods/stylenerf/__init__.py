"""Style-based 3D-aware GANs: StyleNeRF and an EG3D-style triplane generator on the shared
renderer (one registered method, ``stylenerf``; ``generator.kind`` picks the generator)."""

from neural3d.methods.stylenerf.method import StyleNeRF

__all__ = ["StyleNeRF"]
