"""SSDNeRF as a registered method: ``neural3d train|sample|eval ssdnerf``.

Training draws batches of objects and their latents (:mod:`.train`); inference instances hold the
model (EMA weights when the run kept them) and the training latents, and offer ``sample``
(unconditional latents), ``reconstruct`` (single/few-view, :mod:`.recon`) and ``render``.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from neural3d.methods.multiview import load_split
from neural3d.methods.registry import Built, Method, load_weights, module_states, register_method
from neural3d.methods.ssdnerf.config import SSDNeRFConfig
from neural3d.methods.ssdnerf.latents import cache_file, check_state, read_latents
from neural3d.methods.ssdnerf.model import SSDNeRFModel
from neural3d.methods.ssdnerf.recon import MODES, reconstruct
from neural3d.methods.ssdnerf.train import build, make_step_fn, warmup_scheduler
from neural3d.train.checkpoint import CheckpointError


@register_method
class SSDNeRF(Method):
    name = "ssdnerf"
    summary = "single-stage diffusion NeRF: triplane latents + shared decoder + 2D diffusion prior"
    Config = SSDNeRFConfig

    def __init__(self, cfg: SSDNeRFConfig, device="cpu"):
        super().__init__(cfg, device)
        self._latents: torch.Tensor | None = None   # training latents [N,3,C,R,R] (inference)
        self._cache_state: dict[str, Any] | None = None
        self._mean: torch.Tensor | None = None      # their mean [1,3,C,R,R] (or exported)

    # ------------------------------------------------------------------ training
    def build(self) -> Built:
        self.data = load_split(self.cfg.data, "train", self.cfg.data.max_objects or None,
                               tag="ssdnerf", share_dir=self.cfg.train.out_dir)
        model, _, opts = build(self.cfg, len(self.data), self.device)
        self.latopt = opts["latents"]
        o = self.cfg.optim
        sched = warmup_scheduler(opts["main"], o.warmup, o.warmup_ratio)
        return Built({"model": model}, opts, None if sched is None else {"main": sched})

    def setup(self, trainer) -> None:
        self._step = make_step_fn(trainer, trainer.module, self.latopt, self.data, self.cfg)

    def step(self, trainer, step: int):
        return self._step(step)

    @torch.no_grad()
    def evaluate(self, trainer, step: int) -> dict[str, Any]:
        """For the training logs: ``samples``, 4 sampled triplanes (the config's sampler and
        steps, a fixed seed, the EMA weights once warmed up) each seen from 4 orbit views at
        the data resolution. (No held-out PSNR here: every view of the training objects is
        trained on; test objects are scored by ``neural3d eval nvs``.)"""
        if trainer.logger is None:
            return {}
        from neural3d.export.media import tile_rows
        from neural3d.methods.training import eval_module

        cams = self._orbit(4)
        with eval_module(trainer) as model:
            lat = model.sample(4, generator=torch.Generator().manual_seed(0))
            rows = torch.stack([model.render_views(lat[i:i + 1], cams).cpu()
                                for i in range(len(lat))])
        return {"samples": tile_rows(rows, pad=1)}

    def finish(self, trainer) -> dict[str, Any]:
        return {**super().finish(trainer), "checkpoint": str(trainer.ckpt_path)}

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_checkpoint(cls, ckpt, device="cpu", ema="auto") -> SSDNeRF:
        """The model (EMA weights per :func:`use_ema`) and the training latents: kept in the
        checkpoint, or (file-backed cache) read on first use of :attr:`latents` from the run
        folder of :attr:`checkpoint_path` (``RUN/checkpoints/last.pt`` -> ``RUN/<cache_path>``,
        or the absolute ``cache_path``). The checkpoint's cache state is validated now (counts
        and shape against the config, no ``..`` in the path) and :meth:`check_files` checks the
        file when :func:`~neural3d.methods.registry.load` sets the path; nothing is created or
        written. An export
        (:mod:`neural3d.methods.weights`) holds no training latents, only their mean
        (``ckpt["tensors"]["mean_latent"]``)."""
        method = cls(cls.config_from_record(ckpt["record"]), device)
        model = SSDNeRFModel(method.cfg)
        load_weights(model, module_states(ckpt, ema), "model")
        method.modules = {"model": model.to(method.device).eval()}
        cs = ckpt.get("optimizers", {}).get("latents", {}).get("cache")
        if cs is not None:
            check_state(cs, model.latent_shape)
            method._cache_state = cs
        mean = ckpt.get("tensors", {}).get("mean_latent")
        if mean is not None:
            if tuple(mean.shape) != (1, *model.latent_shape):
                raise CheckpointError(f"the exported mean latent is {tuple(mean.shape)}, the "
                                      f"config's latents are {model.latent_shape}")
            method._mean = mean.to(method.device)
        return method

    def check_files(self) -> None:
        """A file-backed latent cache must be there (its ``latents.f32``, of the right size):
        loading a checkpoint whose cache was deleted is an error naming the file."""
        if self._cache_state is not None and "latents" not in self._cache_state:
            cache_file(self._run_folder(), self._cache_state, self.model.latent_shape)

    def _run_folder(self) -> Path:
        """The run folder of :attr:`checkpoint_path` (``RUN/checkpoints/last.pt`` -> ``RUN``)."""
        if self.checkpoint_path is None:
            raise CheckpointError("file-backed latents are read from the run folder of the "
                                  "checkpoint: load it with neural3d.load(path)")
        return Path(self.checkpoint_path).resolve().parent.parent

    @property
    def model(self) -> SSDNeRFModel:
        return self.modules["model"]

    @property
    def latents(self) -> torch.Tensor | None:
        """The training codes ``[N, 3, C, R, R]`` (the cache's pre-activations through
        :meth:`SSDNeRFModel.activate`; None when the checkpoint holds none)."""
        if self._latents is None and self._cache_state is not None:
            root = Path(".") if "latents" in self._cache_state else self._run_folder()
            raw = read_latents(root, self._cache_state, self.model.latent_shape)
            self._latents = self.model.activate(raw)   # where the cache is (CPU)
        return self._latents

    @latents.setter
    def latents(self, value: torch.Tensor | None) -> None:
        self._latents, self._mean = value, None

    def _init_latent(self) -> torch.Tensor | None:
        """The mean training latent (reconstruction starts there), or None without one."""
        if self._mean is None and self.latents is not None:
            self._mean = self.latents.mean(0, keepdim=True)
        return self._mean

    @property
    def mean_latent(self) -> torch.Tensor:
        mean = self._init_latent()
        if mean is None:
            raise ValueError("this checkpoint holds no training latents")
        return mean

    def inference_tensors(self) -> dict[str, torch.Tensor]:
        """The mean training latent (where the checkpoint has latents), not the latents."""
        mean = self._init_latent()
        return {} if mean is None else {"mean_latent": mean}

    @property
    def category(self) -> str:
        return self.cfg.data.category

    # ------------------------------------------------------------------ capabilities
    @classmethod
    def add_arguments(cls, command: str, parser) -> None:
        if command == "sample":
            parser.add_argument("--sampler", choices=["ddim", "ode", "ddpm"], default=None,
                                help="default: the config's (diffusion.sampler)")
            parser.add_argument("--steps", type=int, default=None,
                                help="sampling steps (default: diffusion.sample_steps)")
            parser.add_argument("--frames", type=int, default=36, help="turntable frames")
            parser.add_argument("--res", type=int, default=0,
                                help="render resolution (0 = the training data's)")
            parser.add_argument("--radius", type=float, default=1.3)
            parser.add_argument("--elevation", type=float, default=20.0)
            parser.add_argument("--fps", type=int, default=12)
        if command in ("eval nvs", "reconstruct"):
            parser.add_argument("--recon", dest="mode", default="guided_finetune",
                                choices=list(MODES), help="reconstruction mode")
            parser.add_argument("--guidance-scale", type=float, default=None)
            parser.add_argument("--guidance-wrt", default=None, choices=["x0", "xt"],
                                help="guidance on x0_hat or through the denoiser (default: "
                                     "the checkpoint's recon.guidance_wrt)")
            parser.add_argument("--finetune-steps", type=int, default=None)

    def sample(self, num: int, seed: int = 0, batch: int = 16, steps: int | None = None,
               sampler: str | None = None) -> list[torch.Tensor]:
        """``num`` latents ``[1,3,C,R,R]`` drawn with one seeded generator, ``batch`` at a time."""
        g = torch.Generator().manual_seed(seed)
        out = []
        for i in range(0, num, batch):
            lat = self.model.sample(min(batch, num - i), generator=g, steps=steps,
                                    sampler=sampler)
            out += [lat[j:j + 1] for j in range(lat.shape[0])]
        return out

    def write_samples(self, out: Path, num: int, seed: int = 0, sampler: str | None = None,
                      steps: int | None = None, frames: int = 36, res: int = 0,
                      radius: float = 1.3, elevation: float = 20.0, fps: int = 12
                      ) -> list[Path]:
        """``latents.pt``, ``grid.png`` (4 views per sample) and a turntable per sample."""
        from neural3d.export.media import write_image_rows, write_video

        lat = torch.cat(self.sample(num, seed, steps=steps, sampler=sampler))
        torch.save(lat.cpu(), out / "latents.pt")
        cams = self._orbit(frames, res, radius, elevation)
        grid_idx = torch.arange(0, frames, max(1, frames // 4))[:4]
        rows, paths = [], []
        for i in range(num):
            views = self.render(lat[i:i + 1], cams)
            rows.append(views[grid_idx])
            paths.append(write_video(out / f"turntable_{i:03d}.mp4", views, fps))
        return [write_image_rows(out / "grid.png", rows), out / "latents.pt", *paths]

    def _orbit(self, frames: int, res: int = 0, radius: float = 1.3, elevation: float = 20.0):
        """``frames`` SRN cameras on an orbit; ``res`` 0: the training data's resolution."""
        from neural3d.cameras import Cameras, orbit_path

        return Cameras.srn(orbit_path(frames, radius, elevation), res or self.native_res())

    def reconstruct(self, images: torch.Tensor, cameras, mode: str = "guided_finetune",
                    **recon_overrides) -> torch.Tensor:
        """Latent ``[1,3,C,R,R]`` from posed views; ``recon_overrides`` are ``ReconConfig``
        fields (``guidance_scale``, ``guidance_wrt``, ``finetune_steps``, ...)."""
        rc = replace(self.cfg.recon, **{k: v for k, v in recon_overrides.items()
                                        if v is not None})
        return reconstruct(self.model, images, cameras, rc, mode=mode,
                           init=self._init_latent())

    def native_res(self) -> int:
        """The image size of the training data (the toy renders' or SRN's 128)."""
        return self.cfg.data.native_res()

    def home_camera(self):
        """SRN intrinsics at :meth:`native_res`, radius 1.3, elevation 20 degrees (the first
        turntable view of ``neural3d sample``)."""
        return self._orbit(1)

    def render(self, state: torch.Tensor, cameras) -> torch.Tensor:
        return self.model.render_views(state, cameras).cpu()

    @torch.no_grad()
    def export(self, out: Path, res: int = 128, level: float | None = None,
               sample_index: int = 0, seed: int = 0, state: torch.Tensor | None = None
               ) -> list[Path]:
        """A marching-cubes mesh with vertex colours (``out``'s suffix: PLY, OBJ, GLB) of
        ``state`` (a latent ``[1,3,C,R,R]``, e.g. from :meth:`reconstruct`), else of sample
        ``sample_index``: the last of :meth:`sample` ``(sample_index + 1, seed)``."""
        from neural3d.export import export_mesh

        latent = (self.sample(sample_index + 1, seed)[sample_index] if state is None
                  else state.to(next(self.model.parameters()).device))
        field = self.model.field

        def density(p: torch.Tensor) -> torch.Tensor:
            return field(p[None].to(latent), planes=latent)[0][0].cpu()

        def colour(p: torch.Tensor) -> torch.Tensor:
            # a view-dependent decoder is seen from outside along the radius (p -> centre)
            dirs = -torch.nn.functional.normalize(p, dim=-1)[None].to(latent) \
                if field.view_dependent else None
            return field(p[None].to(latent), dirs, planes=latent)[1][0].cpu()

        return [export_mesh(out, density, colour, self.cfg.model.aabb, res, level)]

    def info(self) -> dict[str, Any]:
        from neural3d.config import to_dict

        d = self.cfg.diffusion
        return {"method": self.name, "ckpt": self.checkpoint_path,
                "ckpt_step": self.checkpoint_step, "train_mode": self.cfg.optim.mode,
                "recon": to_dict(self.cfg.recon), "sampler": d.sampler,
                "sample_steps": d.sample_steps}
