"""nerfstudio method specifications: ``neural3d-triplane`` and ``neural3d-hashgrid``.

Both are a ``VanillaPipeline`` with a ``VanillaDataManager`` over our ``neural3d-srn`` dataparser
(any other nerfstudio dataparser can be chosen on the command line) and :class:`Neural3DModel`.
Defaults follow ``neural3d fit`` (its field configs, TV 1e-2 on triplanes included, Adam at 1e-2
on the MLPs and 3e-2 on the planes / hash tables, exponential decay to 0.1x, 4096 rays per batch,
its occupancy-grid empty-space skipping: see :class:`Neural3DModelConfig`).

Import only nerfstudio's building blocks here, never ``nerfstudio.configs.method_configs``: that
module discovers the plugins while it is being imported, so importing it from a plugin is a
circular import.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from neural3d.integrations.nerfstudio import require_nerfstudio

require_nerfstudio()

from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig  # noqa: E402
from nerfstudio.engine.optimizers import AdamOptimizerConfig  # noqa: E402
from nerfstudio.engine.schedulers import (  # noqa: E402
    ExponentialDecayScheduler,
    ExponentialDecaySchedulerConfig,
)
from nerfstudio.engine.trainer import TrainerConfig  # noqa: E402
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig  # noqa: E402
from nerfstudio.plugins.types import MethodSpecification  # noqa: E402
from torch.optim import lr_scheduler  # noqa: E402

from neural3d.fields import FieldConfig  # noqa: E402
from neural3d.integrations.nerfstudio.dataparser import SRNDataParserConfig  # noqa: E402
from neural3d.integrations.nerfstudio.model import (  # noqa: E402
    Neural3DModelConfig,
    plugin_field_config,
)

DEFAULT_STEPS = 1500
DEFAULT_RAYS = 4096


@dataclass
class FloatExponentialDecaySchedulerConfig(ExponentialDecaySchedulerConfig):
    """nerfstudio's exponential decay with linear/cosine warm-up, computed in Python floats.

    nerfstudio 1.1's own scheduler returns numpy scalars, which end up in the optimiser and
    scheduler state of its checkpoints; torch >= 2.6 loads checkpoints with
    ``weights_only=True`` and refuses them, so ``ns-eval``, ``ns-render`` and ``--load-dir``
    fail. Same schedule, plain floats."""

    _target: type = field(default_factory=lambda: FloatExponentialDecayScheduler)


class FloatExponentialDecayScheduler(ExponentialDecayScheduler):
    config: FloatExponentialDecaySchedulerConfig

    def get_scheduler(self, optimizer, lr_init: float):
        cfg = self.config
        lr_final = lr_init if cfg.lr_final is None else cfg.lr_final
        warm, total = cfg.warmup_steps, cfg.max_steps

        def multiplier(step: int) -> float:
            if step < warm:
                frac = min(max(step / warm, 0.0), 1.0)
                if cfg.ramp == "cosine":
                    frac = math.sin(0.5 * math.pi * frac)
                lr = cfg.lr_pre_warmup + (lr_init - cfg.lr_pre_warmup) * frac
            else:
                t = min(max((step - warm) / max(total - warm, 1), 0.0), 1.0)
                lr = math.exp(math.log(lr_init) * (1 - t) + math.log(lr_final) * t)
            return float(lr / lr_init)

        return lr_scheduler.LambdaLR(optimizer, lr_lambda=multiplier)


def _group(lr: float, steps: int) -> dict:
    return {"optimizer": AdamOptimizerConfig(lr=lr, eps=1e-15),
            "scheduler": FloatExponentialDecaySchedulerConfig(lr_final=lr * 0.1,
                                                              max_steps=steps)}


def make_trainer_config(field: str | FieldConfig = "triplane", method_name: str | None = None,
                        steps: int = DEFAULT_STEPS, rays: int = DEFAULT_RAYS, lr: float = 1e-2,
                        plane_lr: float = 3e-2, **model_overrides) -> TrainerConfig:
    """The ``TrainerConfig`` of a neural3d method (also handy for scripted runs). ``field``: a
    field config, or a kind name for that kind with the plugin's defaults."""
    if isinstance(field, str):
        field = plugin_field_config(field)
    model = Neural3DModelConfig(field=field, **model_overrides)
    return TrainerConfig(
        method_name=method_name or f"neural3d-{field.kind}",
        steps_per_eval_batch=500,
        steps_per_eval_image=500,
        steps_per_save=500,
        steps_per_eval_all_images=steps,
        max_num_iterations=steps,
        mixed_precision=False,
        pipeline=VanillaPipelineConfig(
            datamanager=VanillaDataManagerConfig(
                dataparser=SRNDataParserConfig(),
                train_num_rays_per_batch=rays,
                eval_num_rays_per_batch=rays,
            ),
            model=model,
        ),
        optimizers={"fields": _group(lr, steps), "planes": _group(plane_lr, steps)},
        vis="viewer",
    )


neural3d_triplane = MethodSpecification(
    config=make_trainer_config("triplane"),
    description="neural3d triplane field + neural3d volume renderer (fused compositing kernels)",
)

neural3d_hashgrid = MethodSpecification(
    config=make_trainer_config("hashgrid"),
    description="neural3d multiresolution hash-grid field (tcnn on CUDA, else torch) + neural3d "
                "volume renderer",
)

__all__ = ["FloatExponentialDecayScheduler", "FloatExponentialDecaySchedulerConfig",
           "make_trainer_config", "neural3d_hashgrid", "neural3d_triplane"]
