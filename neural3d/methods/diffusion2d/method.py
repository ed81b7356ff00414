"""The registered 2D diffusion method (``name = "diffusion"``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from neural3d.methods.diffusion2d.config import DiffusionExperiment
from neural3d.methods.diffusion2d.pipeline import DiffusionPipeline
from neural3d.methods.registry import Built, Method, register_method


@register_method
class Diffusion2D(Method):
    """Trains a :class:`DiffusionPipeline` on labelled images in [-1, 1] (the toy renders of
    ``data.categories`` unless ``images``/``labels`` are given); samples class rows with
    classifier-free guidance."""

    name = "diffusion"
    summary = ("2D diffusion (U-Net, DiT, Matryoshka, f-DM, Kaleido, DART, cascade, latent) on "
               "class-labelled toy renders")
    Config = DiffusionExperiment

    def __init__(self, cfg: DiffusionExperiment, device="cpu",
                 images: torch.Tensor | None = None, labels: torch.Tensor | None = None):
        super().__init__(cfg, device)
        self.images, self.labels = images, labels

    @property
    def pipeline(self) -> DiffusionPipeline:
        return self.modules["model"]

    # ------------------------------------------------------------------ training
    def build(self) -> Built:
        pipe = DiffusionPipeline(self.cfg).to(self.device)
        o = self.cfg.optim
        opt = torch.optim.AdamW(pipe.parameters(), lr=o.lr, weight_decay=o.weight_decay)
        warm = max(1, o.warmup)
        # latent diffusion warms up again when its diffusion stage starts
        restart = self.cfg.model.latent.ae_steps if pipe.architecture == "latent" else None

        def lr_factor(s: int) -> float:
            if restart is not None and s >= restart:
                s -= restart
            return min(1.0, (s + 1) / warm)

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
        return Built({"model": pipe}, {"main": opt}, sched)

    def setup(self, trainer) -> None:
        if self.images is None:
            from neural3d.methods.diffusion2d.data import load_toy_images

            self.images, self.labels = load_toy_images(self.cfg.data,
                                                       progress=self.cfg.train.progress)
        self.images, self.labels = self.images.to(self.device), self.labels.to(self.device)
        self.pipeline.fit_data(self.images)
        trainer.record["num_images"] = int(len(self.images))
        self._g = trainer.generator("data")

    def step(self, trainer, step: int) -> dict[str, Any]:
        self.pipeline.before_step(step, self.images)
        idx = torch.randint(len(self.images), (self.cfg.optim.batch,),
                            generator=self._g).to(self.device)
        loss, parts = trainer.model(self.images[idx], self.labels[idx], generator=self._g,
                                    step=step)
        return {"loss": loss, **parts}

    @torch.no_grad()
    def evaluate(self, trainer, step: int) -> dict[str, Any]:
        """For the training logs: ``samples``, one row of 4 images per class (DDIM-20 with
        guidance 3; DART: its own sampler) from a fixed seed, with the EMA weights once they
        have warmed up."""
        if trainer.logger is None:
            return {}
        from neural3d.export.media import tile_rows
        from neural3d.methods.training import eval_module

        n, classes = 4, len(self.cfg.data.categories)
        y = torch.arange(classes).repeat_interleave(n)
        with eval_module(trainer) as pipe:
            steps = None if pipe.architecture == "dart" else 20
            imgs = pipe.generate(len(y), y=y, steps=steps, cfg_scale=3.0,
                                 generator=torch.Generator().manual_seed(0))
        imgs = ((imgs.float().cpu() + 1) / 2).permute(0, 2, 3, 1)
        return {"samples": tile_rows(imgs.reshape(classes, n, *imgs.shape[1:]), pad=1)}

    # ------------------------------------------------------------------ loading
    @classmethod
    def config_from_record(cls, record):
        """Reads older records too: the experiment config at the top level (no ``method``),
        ``run`` for ``train`` and ``model.kind`` for ``model.architecture``."""
        from neural3d.config import from_dict

        rec = dict(record.get("config", record))
        for k in ("method", "format_version", "num_images"):
            rec.pop(k, None)
        if "run" in rec:
            run = dict(rec.pop("run"))
            run.pop("threads", None)
            rec["train"] = run
        model = dict(rec.get("model", {}))
        if "kind" in model:
            model["architecture"] = model.pop("kind")
            rec["model"] = model
        return from_dict(DiffusionExperiment, rec)

    # ------------------------------------------------------------------ sampling
    @classmethod
    def add_arguments(cls, command: str, parser) -> None:
        if command == "sample":
            parser.add_argument("--sampler", default=None,
                                choices=["ddpm", "ddim", "dpmpp2m", "ode", "dart"],
                                help="default: ddim (dart for model.architecture=dart)")
            parser.add_argument("--steps", type=int, default=None,
                                help="model calls (default: 50; DART: model.dart.steps)")
            parser.add_argument("--cfg", type=float, default=3.0,
                                help="classifier-free guidance weight w: uncond + w*(cond - "
                                     "uncond)")
            parser.add_argument("--eta", type=float, default=None, help="DDIM eta (default 0)")
            parser.add_argument("--aug-level", type=float, default=None,
                                help="cascade only: conditioning-augmentation level of the "
                                     "super-resolution stage (default model.cascade.sample_aug)")
            parser.add_argument("--classes", default="all",
                                help="comma-separated category names or indices, or 'all'")
            parser.add_argument("--filename", default="grid.png",
                                help="name of the grid image in --out")

    def class_indices(self, spec: str) -> list[int]:
        """``"all"``, or comma-separated category names or indices -> label indices."""
        cats = self.cfg.data.categories
        if spec == "all":
            return list(range(len(cats)))
        out = []
        for item in (s.strip() for s in spec.split(",")):
            if item.isdigit() and int(item) < len(cats):
                out.append(int(item))
            elif item in cats:
                out.append(cats.index(item))
            else:
                raise ValueError(f"--classes: unknown class {item!r} (have {cats})")
        return out

    def sample(self, num: int, seed: int = 0, classes: str = "all", sampler: str | None = None,
               steps: int | None = None, cfg: float = 3.0, eta: float | None = None,
               progress: bool = False, aug_level: float | None = None) -> torch.Tensor:
        """``num`` images per class, ``[n_classes * num, 3, res, res]`` in [-1, 1], rows of
        ``num`` per class. ``sampler``/``steps``: see :meth:`DiffusionPipeline.generate`."""
        labels = self.class_indices(classes)
        y = torch.tensor([c for c in labels for _ in range(num)], dtype=torch.long)
        g = torch.Generator().manual_seed(seed)
        extra = {"eta": eta} if eta is not None else {}
        if aug_level is not None:
            extra["aug_level"] = aug_level
        return self.pipeline.generate(len(y), y=y, sampler=sampler, steps=steps,
                                      cfg_scale=cfg, generator=g, progress=progress, **extra)

    def write_samples(self, out: Path, num: int, seed: int = 0, filename: str = "grid.png",
                      **opts) -> list[Path]:
        """One row of ``num`` samples per class in ``out/filename``."""
        from neural3d.export.media import write_image_rows

        imgs = self.sample(num, seed, progress=True, **opts)
        imgs = ((imgs.float().cpu().clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1)
        rows = [imgs[i:i + num] for i in range(0, len(imgs), num)]
        return [write_image_rows(out / filename, rows, pad=2)]

    def info(self) -> dict[str, Any]:
        return {"method": self.name, "ckpt": self.checkpoint_path,
                "architecture": self.cfg.model.architecture}
