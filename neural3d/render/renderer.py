"""``VolumeRenderer``: rays + a field + a sampler -> images, depth, opacity. The piece every
method calls (``neural3d fit``, SSDNeRF, the nerfstudio plugin).

Field protocol: ``field(positions [R, S, 3], directions [R, S, 3]) -> (density [R, S] >= 0,
features [R, S, C])``. Packed samples are evaluated as one batch ``[1, N, 3]``.

Samplers (:mod:`neural3d.render.samplers`, :mod:`neural3d.render.occupancy`) place the samples,
padded (composited by :func:`~neural3d.render.composite`) or packed (by
:func:`~neural3d.render.composite_packed`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import torch

from neural3d.render.composite import CompositeResult, composite, composite_packed
from neural3d.render.samplers import (
    ImportanceSampler,
    RaySamples,
    Sampler,
    StratifiedSampler,
    near_far_aabb,
    near_far_sphere,
)

Field = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]


@dataclass
class RendererConfig:
    """Volume rendering settings.

    Ray bounds: ``aabb`` (xmin, ymin, zmin, xmax, ymax, zmax) if given, else a sphere of
    ``sphere_radius`` about the origin if given, else the fixed ``near``/``far``. Rays that miss
    the box or sphere get the background and zero opacity. ``n_samples``/``n_importance`` make
    the default sampler (:func:`default_sampler`) when the renderer is given none.
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


def default_sampler(config: RendererConfig) -> Sampler:
    """``StratifiedSampler(n_samples)``, refined by ``ImportanceSampler(.., n_importance)``
    when ``n_importance > 0``."""
    base = StratifiedSampler(config.n_samples)
    return ImportanceSampler(base, config.n_importance) if config.n_importance > 0 else base


class VolumeRenderer(torch.nn.Module):
    """Renders rays through a field with samples from a sampler.

    ``VolumeRenderer(config=None, sampler=None, **config_overrides)``; without a sampler, the
    config's (:func:`default_sampler`). ``renderer(field, origins [R,3], directions [R,3],
    **kw) -> dict`` with ``features [R, C]`` (``rgb`` too when ``C == 3``), ``depth [R]``,
    ``opacity [R]``, ``backend`` (the compositing backend that ran, a str) and ``samples`` (the
    number of samples the field evaluated, an int); with ``return_weights=True`` also
    ``weights`` (``[R, S]``, packed ``[N]``), ``t_starts``, ``t_ends`` (and ``ray_indices`` when
    packed).

    Call keywords: ``sampler`` (this call's sampler instead of the renderer's), ``near``/``far``
    ``[R]`` (replace the config's bounds), ``background`` (instead of the config's),
    ``generator``, ``jitter`` (None: ``config.jitter`` in training mode only; True/False; or a
    tensor of uniforms for the sampler), ``return_weights``, ``fine_field``, ``timings`` (a dict
    that accumulates the seconds spent in ``sample``, ``field`` and ``composite``).

    With a two-pass sampler (importance sampling) the coarse pass renders the sampler's first
    samples without grad; with ``fine_field`` given it runs with grad through ``field`` and is
    reported under ``"coarse"``, and the fine samples go through ``fine_field``.
    """

    def __init__(self, config: RendererConfig | None = None, sampler: Sampler | None = None,
                 **overrides) -> None:
        super().__init__()
        config = config or RendererConfig()
        self.config = replace(config, **overrides) if overrides else config
        self.sampler = default_sampler(self.config) if sampler is None else sampler

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

    def _shade(self, fld: Field, origins, directions, samples: RaySamples, background,
               need_weights: bool, timings: dict | None = None) -> CompositeResult:
        """Evaluate ``fld`` at ``samples`` and composite them (padded or packed)."""
        t0 = time.perf_counter()
        pos = samples.positions
        if samples.packed:
            idx = samples.ray_indices
            if pos is None:
                mids = 0.5 * (samples.t_starts + samples.t_ends)
                pos = origins[idx] + directions[idx] * mids[:, None]
            density, feats = fld(pos[None], directions[idx][None])
            density, feats = density[0], feats[0]
        else:
            if pos is None:
                mids = 0.5 * (samples.t_starts + samples.t_ends)
                pos = origins[:, None, :] + directions[:, None, :] * mids[..., None]
            density, feats = fld(pos, directions[:, None, :].expand_as(pos))
        if density.shape[-1] == 1 and density.dim() == feats.dim():
            density = density[..., 0]
        if samples.hit is not None and not samples.packed:
            density = density * samples.hit[:, None].to(density.dtype)
        bg = (self.background_for(feats.shape[-1], feats.dtype, feats.device)
              if background is None else background)
        t1 = time.perf_counter()
        kw = dict(background=bg, return_weights=need_weights, stop_eps=self.config.stop_eps,
                  backend=self.config.backend)
        if samples.packed:
            res = composite_packed(density, feats, samples.t_starts, samples.t_ends,
                                   samples.offsets, samples.counts, **kw)
        else:
            res = composite(density, feats, samples.t_starts, samples.t_ends, **kw)
        if timings is not None:
            _add(timings, field=t1 - t0, composite=time.perf_counter() - t1)
        return res

    def forward(
        self,
        field: Field,
        origins: torch.Tensor,
        directions: torch.Tensor,
        *,
        sampler: Sampler | None = None,
        near: torch.Tensor | None = None,
        far: torch.Tensor | None = None,
        background: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        return_weights: bool = False,
        fine_field: Field | None = None,
        jitter: bool | torch.Tensor | None = None,
        timings: dict | None = None,
    ) -> dict:
        cfg = self.config
        if origins.shape != directions.shape or origins.shape[-1] != 3 or origins.dim() != 2:
            raise ValueError(f"VolumeRenderer: origins {tuple(origins.shape)} and directions "
                             f"{tuple(directions.shape)} must both be [R, 3]")
        sampler = self.sampler if sampler is None else sampler
        t0 = time.perf_counter()
        n0, f0, hit = self.bounds(origins, directions)
        near = n0 if near is None else near
        far = f0 if far is None else far
        jit = (cfg.jitter and self.training) if jitter is None else jitter
        result: dict = {}
        two_nets = fine_field is not None

        def coarse_weights(samples: RaySamples) -> torch.Tensor:
            with torch.set_grad_enabled(two_nets and torch.is_grad_enabled()):
                coarse = self._shade(field, origins, directions, samples, background, True)
            if two_nets:
                result["coarse"] = self._pack(coarse, samples, return_weights)
            return coarse.weights

        samples = sampler(origins, directions, near, far, hit, jitter=jit, generator=generator,
                          weights_fn=coarse_weights)
        if timings is not None:
            _add(timings, sample=time.perf_counter() - t0)
        fld = fine_field if two_nets and "coarse" in result else field
        res = self._shade(fld, origins, directions, samples, background, return_weights,
                          timings)
        result.update(self._pack(res, samples, return_weights))
        return result

    @staticmethod
    def _pack(res: CompositeResult, samples: RaySamples, return_weights: bool) -> dict:
        out = {"features": res.features, "depth": res.depth, "opacity": res.opacity,
               "backend": res.backend, "samples": samples.num_samples}
        if res.features.shape[-1] == 3:
            out["rgb"] = res.features
        if return_weights:
            out.update(weights=res.weights, t_starts=samples.t_starts, t_ends=samples.t_ends)
            if samples.packed:
                out["ray_indices"] = samples.ray_indices
        return out


def _add(timings: dict, **seconds: float) -> None:
    for k, v in seconds.items():
        timings[k] = timings.get(k, 0.0) + v
