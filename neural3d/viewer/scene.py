"""What a viewer shows of a loaded method: one fitted scene, or ``samples`` samples of a
generative method, rendered through the method's own ``render``."""

from __future__ import annotations

import torch

from neural3d.cameras import Cameras
from neural3d.methods.registry import Method, MethodError


class Scene:
    """``Scene(method, samples, seed)``: ``states`` (``[None]`` for a method holding one scene,
    else ``samples`` states drawn with ``seed``), ``home`` (the method's
    :meth:`~neural3d.methods.registry.Method.home_camera`) and :meth:`render`.

    Samples are rendered square (the generators' images are) and cropped to the requested
    size, so any window aspect shows an undistorted view."""

    def __init__(self, method: Method, samples: int = 8, seed: int = 0):
        caps = method.capabilities()
        if "render" not in caps:
            raise MethodError(f"method {method.name!r} cannot render: nothing to view")
        self.method = method
        self.square = "sample" in caps
        if self.square and samples < 1:
            raise ValueError(f"samples must be >= 1, got {samples}")
        self.states = method.sample(samples, seed) if self.square else [None]
        self.home = method.home_camera()

    def __len__(self) -> int:
        return len(self.states)

    @torch.no_grad()
    def render(self, cams: Cameras, index: int = 0) -> torch.Tensor:
        """Images ``[V, H, W, 3]`` in [0, 1] (CPU) of state ``index`` at ``cams``."""
        if not 0 <= index < len(self.states):
            raise IndexError(f"sample {index} out of range (0..{len(self.states) - 1})")
        state = self.states[index]
        W, H = cams.width, cams.height
        if not self.square or W == H:
            return self.method.render(state, cams).cpu()
        S = max(W, H)
        ox, oy = (S - W) // 2, (S - H) // 2
        big = Cameras(cams.c2w, cams.fx, cams.fy, cams.cx + ox, cams.cy + oy, S, S)
        return self.method.render(state, big).cpu()[:, oy:oy + H, ox:ox + W]
