"""pixelNeRF-lite as a registered method: ``neural3d train|eval pixelnerf``.

Training: per step ``loss.batch_objects`` training objects, one random input view each and
``loss.rays_per_object`` random rays of all their views
(:func:`~neural3d.methods.multiview.conditioned_batch`); loss ``coarse_weight * MSE(coarse) +
fine_weight * MSE(fine)``. Inference: :meth:`PixelNeRF.reconstruct` encodes the given views (an
:class:`~neural3d.methods.pixelnerf.model.Encoded` state; several views are averaged inside the
MLPs), :meth:`PixelNeRF.render` renders it at any cameras.
"""

from __future__ import annotations

from typing import Any

import torch

from neural3d.methods.multiview import conditioned_batch, load_split
from neural3d.methods.pixelnerf.config import PixelNeRFConfig
from neural3d.methods.pixelnerf.model import Encoded, PixelNeRFModel, camera_tensors
from neural3d.methods.registry import Built, Method, register_method
from neural3d.metrics.image import psnr_from_mse
from neural3d.render import render_image


@register_method
class PixelNeRF(Method):
    name = "pixelnerf"
    summary = "pixelNeRF-lite: single/few-image NeRF from pixel-aligned CNN features"
    Config = PixelNeRFConfig

    # ------------------------------------------------------------------ training
    def build(self) -> Built:
        model = PixelNeRFModel(self.cfg).to(self.device)
        opt = torch.optim.Adam(model.parameters(), lr=self.cfg.optim.lr,
                               betas=(0.9, self.cfg.optim.beta2))
        return Built({"model": model}, {"main": opt})

    def setup(self, trainer) -> None:
        self.data = load_split(self.cfg.data, "train", self.cfg.data.max_objects or None,
                               tag="pixelnerf", share_dir=self.cfg.train.out_dir)
        self._g_batch = trainer.generator("pixelnerf/batch", per_rank=True)
        self._g_render = trainer.generator("pixelnerf/render", per_rank=True)
        self._held = None

    def step(self, trainer, step: int) -> dict[str, Any]:
        lc = self.cfg.loss
        b = conditioned_batch(self.data, lc.batch_objects, lc.rays_per_object,
                              self._g_batch).to(trainer.device)
        w2c, intr = camera_tensors(b.cameras)
        parts = trainer.model(b.images, w2c, intr, b.origins, b.directions, b.rgb,
                              self._g_render)
        mse = parts["mse"]
        loss = lc.fine_weight * mse
        out: dict[str, Any] = {"mse": mse.detach(), "psnr": psnr_from_mse(mse.detach())}
        if "mse_coarse" in parts:
            loss = loss + lc.coarse_weight * parts["mse_coarse"]
            out["psnr_coarse"] = psnr_from_mse(parts["mse_coarse"].detach())
        out["loss"] = loss
        return out

    @torch.no_grad()
    def evaluate(self, trainer, step: int) -> dict[str, Any]:
        """For the logs: the first test object, encoded from its view 0 and rendered at its view
        1 (``heldout``: input | truth | render) and that render's PSNR."""
        if trainer.logger is None:
            return {}
        from neural3d.methods.training import eval_module
        from neural3d.metrics import psnr

        if self._held is None:
            self._held = load_split(self.cfg.data, "test", 1, tag="pixelnerf")
        images, cams = self._held.views(0)
        if len(images) < 2:
            return {}
        with eval_module(trainer) as model:
            state = model.encode_views(images[:1], cams[0])
            pred = self._render(model, state, cams[1]).cpu()
        return {"psnr_heldout": float(psnr(pred, images[1:2])),
                "heldout": torch.cat([images[0], images[1], pred[0]], 1)}

    def finish(self, trainer) -> dict[str, Any]:
        return {**super().finish(trainer), "checkpoint": str(trainer.ckpt_path)}

    # ------------------------------------------------------------------ inference
    @property
    def model(self) -> PixelNeRFModel:
        return self.modules["model"]

    @property
    def category(self) -> str:
        return self.cfg.data.category

    @torch.no_grad()
    def reconstruct(self, images: torch.Tensor, cameras, **opts) -> Encoded:
        """The encoded views ``images [V, H, W, 3]`` with their ``V`` cameras (all of them:
        their features are averaged inside the MLPs, as pixelNeRF's multi-view models do)."""
        if opts:
            raise TypeError(f"pixelnerf.reconstruct takes no options, got {sorted(opts)}")
        if images.dim() != 4 or images.shape[0] != len(cameras):
            raise ValueError(f"pixelnerf.reconstruct needs images [V, H, W, 3] and V cameras, "
                             f"got {tuple(images.shape)} and {len(cameras)}")
        return self.model.encode_views(images.float(), cameras)

    @staticmethod
    def _render(model: PixelNeRFModel, state: Encoded, cameras, chunk: int = 2048
                ) -> torch.Tensor:
        coarse, fine = model.fields(state)
        return render_image(model.renderer, coarse, cameras, chunk,
                            device=state.features.device, fine_field=fine)

    def render(self, state: Encoded, cameras) -> torch.Tensor:
        """``[V, H, W, 3]`` on the CPU: ``state`` (from :meth:`reconstruct`) at ``cameras``."""
        return self._render(self.model, state.to(self.device), cameras).cpu()

    def home_camera(self):
        """SRN intrinsics at the data's resolution, radius 1.3, elevation 20 degrees."""
        from neural3d.cameras import Cameras, orbit_path

        return Cameras.srn(orbit_path(1, 1.3, 20.0), self.cfg.data.native_res())

    def info(self) -> dict[str, Any]:
        m = self.cfg.model
        return {"method": self.name, "ckpt": self.checkpoint_path,
                "ckpt_step": self.checkpoint_step, "n_samples": m.n_samples,
                "n_importance": m.n_importance, "separate_fine": m.separate_fine}
