"""NerfDiff as a registered method: ``neural3d train|eval nvs|reconstruct nerfdiff``.

Training (one loop, :mod:`neural3d.train`): per step ``optim.batch_objects`` training objects,
one random input view each; the NeRF's loss is the MSE of ``optim.rays_per_object`` random rays
of the object's views (the input view included); from ``cdm.start_step`` on, the CDM also learns
to denoise one other view of the first ``cdm.batch`` objects given the NeRF's render of it
(rendered without grad, condition dropped with probability ``cdm.cond_dropout``), weighted by
``cdm.weight`` (or, with ``cdm.cached_pairs``, the NeRF is frozen from then on and the CDM
trains alone on view pairs rendered once: :meth:`NerfDiff.cdm_pairs`). Inference:
``reconstruct`` runs a mode of :mod:`.distill` (``--mode``, default ``ngd``), ``render``
renders the state (or samples the views with the CDM in mode ``cdm``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from neural3d.methods.multiview import conditioned_batch, load_split, other_views, to_float
from neural3d.methods.nerfdiff.config import NerfDiffConfig
from neural3d.methods.nerfdiff.distill import MODES, NerfDiffState, distill, sample_views
from neural3d.methods.nerfdiff.frustum import frustum_coords
from neural3d.methods.nerfdiff.model import NerfDiffModel
from neural3d.methods.registry import Built, Method, MethodError, register_method
from neural3d.metrics.image import psnr_from_mse


@register_method
class NerfDiff(Method):
    name = "nerfdiff"
    summary = ("single-image triplane NeRF + 3D-aware conditional diffusion, NeRF-guided "
               "distillation at test time")
    Config = NerfDiffConfig

    # ------------------------------------------------------------------ training
    def build(self) -> Built:
        torch.manual_seed(self.cfg.train.seed)
        self.data = load_split(self.cfg.data, "train", self.cfg.data.max_objects or None,
                               tag="nerfdiff", share_dir=self.cfg.train.out_dir)
        model = NerfDiffModel(self.cfg).to(self.device)
        o = self.cfg.optim
        opt = torch.optim.Adam([
            {"params": [*model.encoder.parameters(), *model.field.parameters()], "lr": o.lr},
            {"params": list(model.cdm.parameters()), "lr": o.cdm_lr}])
        return Built({"model": model}, {"main": opt})

    def setup(self, trainer) -> None:
        self._g_batch = trainer.generator("nerfdiff/batch", per_rank=True)
        self._g_noise = trainer.generator("nerfdiff/noise", per_rank=True)
        self._pairs: tuple[torch.Tensor, torch.Tensor] | None = None

    def step(self, trainer, step: int) -> dict[str, Any]:
        c, o = self.cfg.cdm, self.cfg.optim
        if c.weight > 0 and step >= c.start_step and c.cached_pairs:
            return self._cdm_step(trainer)
        b = conditioned_batch(self.data, o.batch_objects, o.rays_per_object, self._g_batch)
        dev = trainer.device
        kw: dict[str, Any] = {}
        if c.weight > 0 and step >= c.start_step:
            K = min(c.batch, len(b.objects))
            tgt = self.data.offsets[b.objects[:K]] + other_views(
                self.data, b.objects[:K], b.views[:K], self._g_batch)
            kw = {"cdm_cams": self.data.cameras[tgt].to(dev),
                  "cdm_targets": to_float(self.data.images[tgt]).to(dev),
                  "cond_drop": (torch.rand(K, generator=self._g_batch) < c.cond_dropout
                                ).to(dev)}
        b = b.to(dev)
        parts = trainer.model(b.images, b.cameras, b.origins, b.directions, b.rgb,
                              generator=self._g_noise, **kw)
        mse = parts["render_mse"]
        out = {"render_mse": mse.detach(), "psnr": psnr_from_mse(mse.detach())}
        loss = mse
        if "cdm" in parts:
            loss = loss + c.weight * parts["cdm"]
            out["cdm"] = parts["cdm"].detach()
        out["loss"] = loss
        return out

    @torch.no_grad()
    def cdm_pairs(self, model: NerfDiffModel) -> tuple[torch.Tensor, torch.Tensor]:
        """``cdm.cached_pairs`` (input, target) view pairs of every training object (drawn
        with a generator seeded by ``train.seed``, so a resumed run rebuilds the same pairs):
        ``(conditions [P, 3|6, H, W] on the CPU, targets [P, H, W, 3])``."""
        from tqdm.auto import tqdm

        g = torch.Generator().manual_seed(self.cfg.train.seed + 1)
        data, dev = self.data, next(model.parameters()).device
        objs = torch.arange(len(data)).repeat_interleave(self.cfg.cdm.cached_pairs)
        views = (torch.rand(len(objs), generator=g) * data.counts[objs]).long()
        inp = data.offsets[objs] + views
        tgt = data.offsets[objs] + other_views(data, objs, views, g)
        conds = []
        for s in tqdm(range(0, len(objs), 16), desc="nerfdiff: CDM conditions", unit="batch",
                      disable=not self.cfg.train.progress):
            i, t = inp[s:s + 16], tgt[s:s + 16]
            images = to_float(data.images[i]).to(dev)
            cams_in = data.cameras[i].to(dev)
            renders = model.render_images(model.encode(images), cams_in, data.cameras[t])
            conds.append(model.condition(renders, images).cpu())
        return torch.cat(conds), to_float(data.images[tgt])

    def _cdm_step(self, trainer) -> dict[str, Any]:
        """A CDM step on the cached pairs (the NeRF frozen)."""
        c, dev = self.cfg.cdm, trainer.device
        if self._pairs is None:
            self._pairs = self.cdm_pairs(trainer.module)
        conds, targets = self._pairs
        idx = torch.randint(0, len(targets), (c.batch,), generator=self._g_batch)
        drop = (torch.rand(c.batch, generator=self._g_batch) < c.cond_dropout).to(dev)
        parts = trainer.model(None, cdm_targets=targets[idx].to(dev),
                              cdm_cond=conds[idx].to(dev), cond_drop=drop,
                              generator=self._g_noise)
        return {"cdm": parts["cdm"].detach(), "loss": c.weight * parts["cdm"]}

    def finish(self, trainer) -> dict[str, Any]:
        return {**super().finish(trainer), "checkpoint": str(trainer.ckpt_path)}

    # ------------------------------------------------------------------ inference
    @property
    def model(self) -> NerfDiffModel:
        return self.modules["model"]

    @property
    def category(self) -> str:
        return self.cfg.data.category

    @classmethod
    def add_arguments(cls, command: str, parser) -> None:
        if command in ("eval nvs", "reconstruct"):
            parser.add_argument("--mode", default="ngd", choices=list(MODES),
                                help="test-time mode (default ngd; the others are ablations)")
            parser.add_argument("--gamma", type=float, default=None,
                                help="NGD blend weight of the NeRF render (ngd.gamma)")
            parser.add_argument("--ngd-steps", dest="steps", type=int, default=None,
                                help="DDIM steps from t_start (ngd.steps)")
            parser.add_argument("--t-start", dest="t_start", type=float, default=None)
            parser.add_argument("--virtual-views", dest="views", type=int, default=None)
            parser.add_argument("--guidance-scale", dest="guidance_scale", type=float,
                                default=None, help="CDM classifier-free guidance")
            parser.add_argument("--finetune-steps", dest="finetune_steps", type=int,
                                default=None, help="Adam steps per DDIM step (M)")

    def ngd_config(self, **overrides):
        """``cfg.ngd`` with the given (non-None) fields replaced, checked."""
        from neural3d.config import validate

        ngd = replace(self.cfg.ngd, **{k: v for k, v in overrides.items() if v is not None})
        validate(ngd, "ngd")
        return ngd

    def reconstruct(self, images: torch.Tensor, cameras, mode: str = "ngd",
                    **ngd_overrides) -> NerfDiffState:
        """The state of one object from ONE posed view ``images [1, H, W, 3]`` (NerfDiff is a
        single-image method); ``ngd_overrides`` are :class:`NGDConfig` fields."""
        if images.shape[0] != 1:
            raise MethodError(f"nerfdiff reconstructs from one input view, got "
                              f"{images.shape[0]}")
        if tuple(images.shape[1:3]) != (self.model.res, self.model.res):
            raise MethodError(f"nerfdiff was trained on {self.model.res} px views, got "
                              f"{tuple(images.shape[1:3])}")
        return distill(self.model, images, cameras[0], self.ngd_config(**ngd_overrides), mode)

    def render(self, state: NerfDiffState, cameras) -> torch.Tensor:
        if state.mode == "cdm":
            return sample_views(self.model, state, cameras, self.cfg.ngd)
        planes = state.planes.to(next(self.model.parameters()).device)
        return self.model.render_views(planes, state.camera, cameras).cpu()

    def native_res(self) -> int:
        return self.cfg.data.native_res()

    def home_camera(self):
        """SRN intrinsics at the training resolution, radius 1.3, elevation 20 degrees."""
        from neural3d.cameras import Cameras, orbit_path

        return Cameras.srn(orbit_path(1, 1.3, 20.0), self.native_res())

    @torch.no_grad()
    def export(self, out: Path, res: int = 128, level: float | None = None,
               sample_index: int = 0, seed: int = 0, state: NerfDiffState | None = None
               ) -> list[Path]:
        """A marching-cubes mesh with vertex colours of a reconstruction ``state`` (NerfDiff
        has no unconditional samples: ``neural3d reconstruct`` makes the state)."""
        from neural3d.export import export_mesh

        if state is None:
            raise MethodError("nerfdiff exports reconstructions: run `neural3d reconstruct "
                              "nerfdiff CKPT --image IMG --pose POSE --out DIR`")
        dev = next(self.model.parameters()).device
        planes, cam = state.planes.to(dev), state.camera.to(dev)
        field, radius = self.model.field, self.model.depth_radius

        def query(p: torch.Tensor):
            return field(frustum_coords(cam, p[None].to(dev), radius), planes=planes)

        return [export_mesh(out, lambda p: query(p)[0][0].cpu(), lambda p: query(p)[1][0].cpu(),
                            self.cfg.model.aabb, res, level)]

    def info(self) -> dict[str, Any]:
        from neural3d.config import to_dict

        return {"method": self.name, "ckpt": self.checkpoint_path,
                "ckpt_step": self.checkpoint_step, "ngd": to_dict(self.cfg.ngd)}
