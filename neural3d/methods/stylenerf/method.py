"""StyleNeRF / EG3D-style GANs as one registered method: ``neural3d train|sample|eval stylenerf``.

One training step (manual mode, two optimisers): D on reals vs detached fakes (non-saturating
logistic loss), every ``loss.r1_interval`` steps a separate lazy R1 step on D (gain
``interval * gamma / 2``, D's Adam rescaled, :func:`.losses.lazy_adam`); then G on fresh fakes
(non-saturating loss + ``nerf_path_weight`` x the NeRF-path regulariser), with style mixing and
the mapping's running mean w updated. G keeps an EMA copy (half-life ``optim.ema_kimg``).
Progressive growing (:func:`.generator.growth`) sets the resolution G renders and D sees.
Every random draw comes from the trainer's named generators, so resumed runs repeat exactly.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from neural3d.methods.registry import Built, Method, MethodError, register_method
from neural3d.methods.stylenerf.camera import CameraPrior
from neural3d.methods.stylenerf.config import DataConfig, StyleNeRFConfig
from neural3d.methods.stylenerf.discriminator import Discriminator
from neural3d.methods.stylenerf.generator import Generator, growth, nerf_path_error
from neural3d.methods.stylenerf.losses import d_loss, g_loss, lazy_adam, r1_penalty


def load_reals(dc: DataConfig, res: int) -> torch.Tensor:
    """The training images ``[N, 3, res, res]`` in [0, 1] (poses, if any, dropped)."""
    from neural3d.data import DataError, ImageFolder, SRNCategory

    if dc.format == "folder":
        images = ImageFolder(dc.root, res, max_images=dc.max_images or None).load()
    else:
        root = dc.root
        if dc.toy:
            from neural3d.data.toy import ensure_toy_dataset

            root = ensure_toy_dataset(
                dc.root, dc.category, lambda m: print(f"[stylenerf] {m}", flush=True),
                objects=dc.toy_objects, views=dc.toy_views, test_views=dc.toy_test_views,
                res=dc.toy_res, seed=dc.toy_seed, test_objects=dc.toy_test_objects)
        objs = SRNCategory(root, dc.category, "train", resolution=res).load()
        images = torch.cat([o.images for o in objs])
        if dc.max_images:
            images = images[:dc.max_images]
    if len(images) == 0:
        raise DataError(f"{dc.root}: no training images")
    return images.permute(0, 3, 1, 2).contiguous()


@register_method
class StyleNeRF(Method):
    name = "stylenerf"
    summary = ("style-based 3D-aware GAN: StyleNeRF (NeRF + 1x1 upsampler) or an EG3D-style "
               "triplane generator (generator.kind)")
    Config = StyleNeRFConfig

    # ------------------------------------------------------------------ training
    def build(self) -> Built:
        cfg = self.cfg
        torch.manual_seed(cfg.train.seed)          # the same initial weights in every run
        G = Generator(cfg.mapping, cfg.generator).to(self.device)
        D = Discriminator(cfg.discriminator, cfg.generator.output_res,
                          G.d_channels).to(self.device)
        o = cfg.optim
        interval = cfg.loss.r1_interval if cfg.loss.r1_gamma > 0 else 0
        lr_d, betas_d = lazy_adam(o.lr_d, o.betas, interval)
        opts = {"G": torch.optim.Adam(G.parameters(), o.lr_g, betas=tuple(o.betas)),
                "D": torch.optim.Adam(D.parameters(), lr_d, betas=betas_d)}
        ema = {"G": cfg.ema_decay()} if o.ema_kimg > 0 else {}
        return Built({"G": G, "D": D}, opts, ema=ema, manual=True)

    def setup(self, trainer) -> None:
        self.reals = load_reals(self.cfg.data, self.cfg.generator.output_res)
        self.prior = CameraPrior(self.cfg.camera)
        self.g_data, self.g_z = trainer.generator("data"), trainer.generator("z")
        self.g_cam, self.g_render = trainer.generator("cameras"), trainer.generator("render")

    def _latents(self, B: int):
        """z, the mixing z and cutoff (StyleGAN2: one cutoff per batch, mixing with
        probability ``style_mixing``), drawn from the trainer's generator."""
        m = self.cfg.mapping
        z, z2 = (torch.randn(B, m.z_dim, generator=self.g_z) for _ in range(2))
        num_ws = self.generator.synthesis.num_ws
        cutoff = int(torch.randint(1, max(num_ws, 2), (), generator=self.g_z))
        mix = float(torch.rand((), generator=self.g_z)) < m.style_mixing
        return z.to(self.device), z2.to(self.device), (cutoff if mix else num_ws)

    @property
    def generator(self) -> Generator:
        return self.modules["G"]

    def step(self, trainer, step: int) -> dict[str, Any]:
        cfg, B = self.cfg, self.cfg.optim.batch
        G, D, Graw = trainer.modules["G"], trainer.modules["D"], trainer.raw["G"]
        level, alpha = growth(cfg.progressive, Graw.levels, step)
        res = cfg.generator.render_res * 2 ** level

        def disc(x):
            return D(x, res, alpha)

        # D: reals vs detached fakes
        z, z2, cut = self._latents(B)
        cams = self.prior.sample(B, res, self.g_cam)
        with torch.no_grad():
            fake = G(z, cams, level, alpha, mix_z=z2, mix_cutoff=cut, generator=self.g_render)
        idx = torch.randint(len(self.reals), (B,), generator=self.g_data)
        real = Graw.real_input(self.reals[idx].to(self.device), res, alpha)
        real_logits, fake_logits = disc(real), disc(Graw.d_input(fake))
        loss_d = d_loss(real_logits, fake_logits)
        trainer.backward_step(loss_d, "D")
        out = {"loss_d": loss_d.detach(), "res": float(res), "alpha": alpha,
               "d_real_acc": (real_logits > 0).float().mean().detach(),
               "d_fake_acc": (fake_logits < 0).float().mean().detach()}
        interval, gamma = cfg.loss.r1_interval, cfg.loss.r1_gamma
        if gamma > 0 and interval > 0 and step % interval == 0:
            r1 = r1_penalty(disc, real).mean()
            trainer.backward_step(r1 * (gamma / 2) * interval, "D")
            out["r1"] = r1.detach()
        # G: fresh fakes, non-saturating loss + NeRF-path regulariser
        z, z2, cut = self._latents(B)
        cams = self.prior.sample(B, res, self.g_cam)
        gc = cfg.generator
        n_reg = (gc.nerf_path_pixels if gc.kind == "stylenerf" and gc.upsampler == "learned"
                 and gc.nerf_path_weight > 0 else 0)
        gen = G(z, cams, level, alpha, mix_z=z2, mix_cutoff=cut, update_avg=True,
                generator=self.g_render, nerf_path_pixels=n_reg)
        loss_g = g_loss(disc(Graw.d_input(gen)))
        total = loss_g
        if "nerf_path" in gen:
            reg = gen["nerf_path"].mean()
            total = total + gc.nerf_path_weight * reg
            out["nerf_path"] = reg.detach()
        trainer.backward_step(total, "G")
        out.update(loss_g=loss_g.detach(), loss=(loss_d + total).detach())
        return out

    @torch.no_grad()
    def evaluate(self, trainer, step: int) -> dict[str, Any]:
        """For the training logs: ``samples``, 4 latents (a fixed seed, G's EMA once warmed
        up) each seen from 4 yaws at 20 degrees elevation, at the resolution G trains at now
        (upsampled to ``output_res``). A GAN on unposed images has no held-out views."""
        if trainer.logger is None:
            return {}
        from neural3d.export.media import tile_rows
        from neural3d.methods.training import eval_module

        n, views, res = 4, 4, self.cfg.generator.output_res
        with eval_module(trainer, "G") as G:
            level, alpha = growth(self.cfg.progressive, G.levels, step)
            r = self.cfg.generator.render_res * 2 ** level
            z = torch.randn(n, self.cfg.mapping.z_dim,
                            generator=torch.Generator().manual_seed(0)).to(self.device)
            ws = G.mapping(z).repeat_interleave(views, 0)
            yaw = torch.arange(views, dtype=torch.float64).repeat(n) * (2 * torch.pi / views)
            cams = CameraPrior(self.cfg.camera).cameras(yaw, torch.full_like(yaw, torch.pi / 9),
                                                        r)
            img = G.synthesis(ws, cams, level, alpha)["image"].float().clamp(0, 1)
        img = torch.nn.functional.interpolate(img, size=(res, res), mode="nearest")
        return {"samples": tile_rows(img.permute(0, 2, 3, 1).cpu().reshape(n, views, res,
                                                                              res, -1), pad=1)}

    def finish(self, trainer) -> dict[str, Any]:
        return {**super().finish(trainer), "checkpoint": str(trainer.ckpt_path)}

    # ------------------------------------------------------------------ capabilities
    @property
    def category(self) -> str:
        return self.cfg.data.category

    @classmethod
    def add_arguments(cls, command: str, parser) -> None:
        if command in ("sample", "eval generation"):
            parser.add_argument("--psi", type=float, default=1.0, help="truncation (1 = off)")
        if command == "sample":
            parser.add_argument("--frames", type=int, default=36, help="turntable frames")
            parser.add_argument("--elevation", type=float, default=20.0,
                                help="turntable elevation (degrees)")
            parser.add_argument("--fps", type=int, default=12)

    def sample(self, num: int, seed: int = 0, psi: float = 1.0) -> list[torch.Tensor]:
        """``num`` latents ``ws [1, num_ws, w_dim]`` (truncated towards the mean w by ``psi``)."""
        g = torch.Generator().manual_seed(seed)
        z = torch.randn(num, self.cfg.mapping.z_dim, generator=g).to(self.device)
        with torch.no_grad():
            ws = self.generator.mapping(z, psi)
        return [ws[i:i + 1] for i in range(num)]

    @torch.no_grad()
    def render_with_depth(self, state: torch.Tensor, cameras, chunk: int = 8):
        """Images ``[V, H, W, 3]`` at the cameras' size (the generator's output resized when it
        differs) and the NeRF's depth ``[V, r, r]``."""
        G = self.generator
        if G.training:
            raise MethodError("render needs an inference instance (neural3d.load)")
        imgs, depths = [], []
        for s in range(0, len(cameras), chunk):
            cams = cameras[torch.arange(s, min(s + chunk, len(cameras)))]
            ws = state.to(self.device).expand(len(cams), -1, -1)
            out = G.synthesis(ws, cams, G.levels, 1.0)
            img = torch.nn.functional.interpolate(out["image"], size=(cams.height, cams.width),
                                                  mode="bilinear", align_corners=False,
                                                  antialias=True) \
                if out["image"].shape[-2:] != (cams.height, cams.width) else out["image"]
            imgs.append(img.clamp(0, 1).permute(0, 2, 3, 1).cpu())
            depths.append(out["depth"][:, 0].cpu())
        return torch.cat(imgs), torch.cat(depths)

    def render(self, state: torch.Tensor, cameras) -> torch.Tensor:
        return self.render_with_depth(state, cameras)[0]

    def home_camera(self):
        """The camera prior's intrinsics at the output resolution, yaw 0, pitch 20 degrees
        (the first turntable view of ``neural3d sample``)."""
        one = torch.zeros(1, dtype=torch.float64)
        return CameraPrior(self.cfg.camera).cameras(one, one + 20 * torch.pi / 180,
                                                    self.cfg.generator.output_res)

    @torch.no_grad()
    def export(self, out: Path, res: int = 128, level: float | None = None,
               sample_index: int = 0, seed: int = 0) -> list[Path]:
        """A marching-cubes mesh of the generator's 3D representation (the NeRF, or EG3D's
        triplanes and decoder) with its raw RGB as vertex colours (``out``'s suffix: PLY, OBJ,
        GLB), for sample ``sample_index``: the last of :meth:`sample` ``(sample_index + 1,
        seed)``."""
        from neural3d.export import export_mesh

        ws = self.sample(sample_index + 1, seed)[sample_index]
        fn = self.generator.synthesis.point_field(ws)
        return [export_mesh(out, lambda p: fn(p.to(ws.device))[0].cpu(),
                            lambda p: fn(p.to(ws.device))[1].cpu(), self.cfg.generator.aabb,
                            res, level)]

    def write_samples(self, out: Path, num: int, seed: int = 0, psi: float = 1.0,
                      frames: int = 36, elevation: float = 20.0, fps: int = 12) -> list[Path]:
        """``grid.png`` (4 turntable views per sample), ``depth.png`` (the same views' NeRF
        depth, near white, far black), ``turntable_NNN.mp4`` per sample and ``ws.pt``."""
        from neural3d.export.media import write_image_rows, write_video

        res = self.cfg.generator.output_res
        prior = CameraPrior(self.cfg.camera)
        yaw = torch.arange(frames, dtype=torch.float64) * (2 * torch.pi / frames)
        pitch = torch.full_like(yaw, elevation * torch.pi / 180)
        cams = prior.cameras(yaw, pitch, res)
        states = self.sample(num, seed, psi)
        out.mkdir(parents=True, exist_ok=True)
        torch.save(torch.cat(states).cpu(), out / "ws.pt")
        pick = torch.arange(0, frames, max(1, frames // 4))[:4]
        rows, drows, paths = [], [], []
        r = self.cfg.camera.radius
        near, far = r - 0.87, r + 0.87            # the unit box's half-diagonal around the origin
        for i, ws in enumerate(states):
            views, depth = self.render_with_depth(ws, cams)
            rows.append(views[pick])
            d = ((far - depth[pick]) / (far - near)).clamp(0, 1)
            d = torch.nn.functional.interpolate(d[:, None], size=(res, res), mode="nearest")
            drows.append(d[:, 0, :, :, None].expand(-1, -1, -1, 3))
            paths.append(write_video(out / f"turntable_{i:03d}.mp4", views, fps))
        return [write_image_rows(out / "grid.png", rows),
                write_image_rows(out / "depth.png", drows), out / "ws.pt", *paths]

    @torch.no_grad()
    def consistency_psnr(self, num: int = 64, seed: int = 0, pixels: int = 16,
                         batch: int = 8) -> float:
        """3D consistency: PSNR between the final image and the NeRF path (:meth:`nerf_path` of
        the synthesis network: the NeRF's per-sample features through the 1x1 upsampler, or the
        raw render for NeRF-only and EG3D) at a ``pixels x pixels`` grid, per sample, averaged
        over ``num`` samples drawn at the camera prior."""
        G = self.generator
        g = torch.Generator().manual_seed(seed)
        prior, res = CameraPrior(self.cfg.camera), self.cfg.generator.output_res
        psnrs = []
        for s in range(0, num, batch):
            n = min(batch, num - s)
            ws = torch.cat(self.sample(n, seed + s))
            cams = prior.sample(n, res, g)
            out = G.synthesis(ws, cams, G.levels, 1.0)
            err = nerf_path_error(G.synthesis, ws, cams, out["image"], G.levels, 1.0, pixels, g)
            psnrs.append(-10 * torch.log10((err / 3).clamp_min(1e-10)))
        return float(torch.cat(psnrs).mean())

    def info(self) -> dict[str, Any]:
        g = self.cfg.generator
        return {"method": self.name, "generator": g.kind,
                "upsampler": getattr(g, "upsampler", None), "ckpt": self.checkpoint_path,
                "ckpt_step": self.checkpoint_step, "output_res": g.output_res,
                "render_res": g.render_res, "psi": 1.0}
