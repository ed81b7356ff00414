"""The camera prior of an unposed 3D-aware GAN: where the generator's images are seen from."""

from __future__ import annotations

import math

import torch

from neural3d.cameras import Cameras, sphere_c2w
from neural3d.methods.stylenerf.config import CameraConfig


def _draw(kind: str, lo: float, hi: float, n: int, g: torch.Generator | None) -> torch.Tensor:
    """``n`` angles in radians from ``[lo, hi]`` degrees (see :class:`CameraConfig`)."""
    lo, hi = math.radians(lo), math.radians(hi)
    if kind == "uniform":
        return lo + (hi - lo) * torch.rand(n, generator=g, dtype=torch.float64)
    if kind == "gaussian":
        return 0.5 * (lo + hi) + 0.5 * (hi - lo) * torch.randn(n, generator=g,
                                                               dtype=torch.float64)
    if kind == "sphere":
        s = math.sin(lo) + (math.sin(hi) - math.sin(lo)) * torch.rand(n, generator=g,
                                                                      dtype=torch.float64)
        return torch.asin(s)
    raise ValueError(f"unknown angle distribution {kind!r}")


class CameraPrior:
    """``prior.sample(n, res, generator) -> Cameras``: eyes on a sphere of ``cfg.radius`` looking
    at the origin, world up +z, yaw and pitch drawn per :class:`CameraConfig`, pinhole with focal
    ``cfg.focal * res`` and the principal point at the centre."""

    def __init__(self, cfg: CameraConfig):
        if len(cfg.yaw_range) != 2 or len(cfg.pitch_range) != 2:
            raise ValueError("camera.yaw_range and camera.pitch_range need [min, max]")
        self.cfg = cfg

    def cameras(self, yaw: torch.Tensor, pitch: torch.Tensor, res: int) -> Cameras:
        """Cameras at ``yaw``/``pitch`` (radians) for ``res x res`` images."""
        c2w = sphere_c2w(yaw, pitch, self.cfg.radius).float()
        f = self.cfg.focal * res
        return Cameras(c2w, f, f, res / 2.0, res / 2.0, res, res)

    def sample(self, n: int, res: int, generator: torch.Generator | None = None) -> Cameras:
        c = self.cfg
        yaw = _draw(c.yaw, *c.yaw_range, n, generator)
        pitch = _draw(c.pitch, *c.pitch_range, n, generator)
        return self.cameras(yaw, pitch, res)
