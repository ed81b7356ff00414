"""``VolumeRenderer``: rays + a field -> images, depth, opacity. The piece every method calls.

Field protocol: ``field(positions [R, S, 3], directions [R, S, 3]) -> (density [R, S] >= 0,
features [R, S, C])``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from neural3d.render.composite import composite
from neural3d.render.samplers import (
    importance_samples,
    near_far_aabb,
    near_far_sphere,
    stratified_samples,
)

Field = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class RendererConfig:
    """Volume rendering settings.

    Ray bounds: ``aabb`` (xmin, ymin, zmin, xmax, ymax, zmax) if given, else a sphere of
    ``sphere_radius`` about the origin if given, else the fixed ``near``/``far``. Rays that miss
    the box or sphere get the background and zero opacity.
    """

    n_samples: int = 64
    n_importance: int = 0
    near: float = 0.0
    far: float = 6.0
    aabb: tuple[float, ...] | None = None
    sphere_radius: float | None = None
    min_near: float = 0.0
    background: tuple[float, ...] | None = None
    white_background: bool = False
    jitter: bool = True  # only while the module is in training mode
    stop_eps: float = 0.0  # early ray termination threshold on transmittance (0 = off)
    backend: str | None = None  # torch | cpp | cuda | None (auto / $NEURAL3D_BACKEND)

    def __post_init__(self) -> None:
        if self.n_samples < 1:
            raise ValueError(f"RendererConfig.n_samples must be >= 1, got {self.n_samples}")
        if self.n_importance < 0:
            raise ValueError("RendererConfig.n_importance must be >= 0")
        if self.aabb is not None and len(self.aabb) != 6:
            raise ValueError(f"RendererConfig.aabb needs 6 numbers, got {self.aabb}")
        if self.aabb is None and self.sphere_radius is None and not self.far > self.near:
            raise ValueError(f"RendererConfig: far ({self.far}) must exceed near ({self.near})")
        if self.backend not in (None, "auto", "torch", "cpp", "cuda"):
            raise ValueError(f"RendererConfig.backend must be torch|cpp|cuda, got "
                             f"{self.backend!r}")


class VolumeRenderer(torch.nn.Module):
    """Renders rays through a field. Jitter is applied in training mode (``.train()``) only.

    ``renderer(field, origins [R,3], directions [R,3]) -> dict`` with ``features [R, C]``
    (``rgb`` too when ``C == 3``), ``depth [R]``, ``opacity [R]``, and with
    ``return_weights=True`` also ``weights [R, S]``, ``t_starts``, ``t_ends``. With
    ``n_importance > 0`` a coarse pass (no grad, or with grad through ``fine_field``'s partner
    ``field`` when ``fine_field`` is given, reported under ``"coarse"``) places the fine samples.
    """

    def __init__(self, config: RendererConfig | None = None, **overrides) -> None:
        super().__init__()
        config = config or RendererConfig()
        self.config = replace(config, **overrides) if overrides else config

    def background_for(self, n_channels: int, dtype, device) -> torch.Tensor | None:
        cfg = self.config
        if cfg.background is not None:
            bg = torch.as_tensor(cfg.background, dtype=dtype, device=device)
            return bg.expand(n_channels) if bg.numel() == 1 else bg
        if cfg.white_background:
            return torch.ones(n_channels, dtype=dtype, device=device)
        return None

    def bounds(self, origins: torch.Tensor, directions: torch.Tensor):
        cfg = self.config
        if cfg.aabb is not None:
            return near_far_aabb(origins, directions, cfg.aabb, cfg.min_near)
        if cfg.sphere_radius is not None:
            return near_far_sphere(origins, directions, cfg.sphere_radius, min_near=cfg.min_near)
        r = origins.shape[0]
        near = torch.full((r,), cfg.near, dtype=origins.dtype, device=origins.device)
        far = torch.full((r,), cfg.far, dtype=origins.dtype, device=origins.device)
        return near, far, torch.ones(r, dtype=torch.bool, device=origins.device)

    def _shade(self, fld: Field, origins, directions, t_starts, t_ends, hit, background,
               need_weights):
        mids = 0.5 * (t_starts + t_ends)
        positions = origins[:, None, :] + directions[:, None, :] * mids[..., None]
        dirs = directions[:, None, :].expand_as(positions)
        density, feats = fld(positions, dirs)
        if density.dim() == 3 and density.shape[-1] == 1:
            density = density[..., 0]
        density = density * hit[:, None].to(density.dtype)
        if background is None:
            bg = self.background_for(feats.shape[-1], feats.dtype, feats.device)
        else:
            bg = background
        return composite(density, feats, t_starts, t_ends, background=bg,
                         return_weights=need_weights, stop_eps=self.config.stop_eps,
                         backend=self.config.backend)

    def forward(
        self,
        field: Field,
        origins: torch.Tensor,
        directions: torch.Tensor,
        *,
        near: torch.Tensor | None = None,
        far: torch.Tensor | None = None,
        background: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        return_weights: bool = False,
        fine_field: Field | None = None,
        jitter: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        cfg = self.config
        if origins.shape != directions.shape or origins.shape[-1] != 3 or origins.dim() != 2:
            raise ValueError(f"VolumeRenderer: origins {tuple(origins.shape)} and directions "
                             f"{tuple(directions.shape)} must both be [R, 3]")
        n0, f0, hit = self.bounds(origins, directions)
        near = n0 if near is None else near
        far = f0 if far is None else far
        jit = (cfg.jitter and self.training) if jitter is None else jitter
        t_starts, t_ends = stratified_samples(near, far, cfg.n_samples, jitter=jit,
                                              generator=generator)
        result: dict[str, torch.Tensor] = {}
        if cfg.n_importance > 0:
            two_nets = fine_field is not None
            with torch.set_grad_enabled(two_nets and torch.is_grad_enabled()):
                coarse = self._shade(field, origins, directions, t_starts, t_ends, hit,
                                     background, True)
            if two_nets:
                result["coarse"] = self._pack(coarse, t_starts, t_ends, return_weights)
            t_starts, t_ends = importance_samples(
                t_starts, t_ends, coarse.weights.detach(), cfg.n_importance,
                generator=generator, deterministic=not jit)
            field = fine_field if two_nets else field
        res = self._shade(field, origins, directions, t_starts, t_ends, hit, background,
                          return_weights)
        result.update(self._pack(res, t_starts, t_ends, return_weights))
        return result

    @staticmethod
    def _pack(res, t_starts, t_ends, return_weights) -> dict:
        out = {"features": res.features, "depth": res.depth, "opacity": res.opacity}
        if res.features.shape[-1] == 3:
            out["rgb"] = res.features
        if return_weights:
            out.update(weights=res.weights, t_starts=t_starts, t_ends=t_ends)
        return out
