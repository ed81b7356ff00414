"""Where training scalars and images go: one small interface, two backends.

``train.vis`` chooses the backend (``neural3d train METHOD --vis tensorboard|wandb|none``):

- ``tensorboard`` (default): event files under ``OUT/tb`` (``tensorboard --logdir OUT/tb``);
- ``wandb``: a Weights & Biases run whose files live under ``OUT/wandb`` (the optional extra
  ``pip install 'neural3d[wandb]'``). wandb's own settings decide online or offline:
  ``WANDB_MODE=offline`` or ``wandb offline`` keep everything on disk (``wandb sync`` uploads it
  later); ``WANDB_PROJECT`` names the project (default ``neural3d``);
- ``none``: nothing is logged (``run.json``, checkpoints and the progress bar stay).

A :class:`Logger` takes scalars ``{tag: float}`` and images ``{tag: [H, W, 3] or [H, W]}``
(floats in [0, 1]) at a step; tags are ``section/name`` (``train/loss``, ``eval/samples``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

#: the values of ``train.vis``
VIS_BACKENDS = ("tensorboard", "wandb", "none")


def check_vis(value: str, key: str = "vis") -> None:
    """A :class:`~neural3d.config.ConfigError` naming ``key`` unless ``value`` is a backend."""
    from neural3d.config import invalid

    if value not in VIS_BACKENDS:
        raise invalid(key, f"must be one of {', '.join(VIS_BACKENDS)}, got {value!r}")


def _image(img: torch.Tensor) -> torch.Tensor:
    """``[H, W, 3]`` or ``[H, W]`` float in [0, 1] on the CPU."""
    img = img.detach().float().clamp(0, 1).cpu()
    if img.dim() not in (2, 3) or (img.dim() == 3 and img.shape[-1] not in (1, 3)):
        raise ValueError(f"images are [H, W, 3] or [H, W], got {list(img.shape)}")
    return img


class Logger:
    """The interface the trainer logs through (rank 0 only)."""

    #: what :func:`make_logger` was asked for
    kind = ""

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        raise NotImplementedError

    def images(self, images: Mapping[str, torch.Tensor], step: int) -> None:
        raise NotImplementedError

    def how_to_view(self) -> str:
        """One line saying where the logs are and how to look at them."""
        raise NotImplementedError

    def flush(self) -> None:
        """Make what was logged so far readable by other processes."""

    def close(self) -> None:
        """Flush and release the backend."""


class TensorBoardLogger(Logger):
    """Event files in ``log_dir`` (torch's ``SummaryWriter``)."""

    kind = "tensorboard"

    def __init__(self, log_dir: str | Path):
        from torch.utils.tensorboard import SummaryWriter

        self.log_dir = Path(log_dir)
        self.writer = SummaryWriter(str(self.log_dir))

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        for k, v in values.items():
            self.writer.add_scalar(k, float(v), step)

    def images(self, images: Mapping[str, torch.Tensor], step: int) -> None:
        for k, img in images.items():
            img = _image(img)
            self.writer.add_image(k, img, step, dataformats="HWC" if img.dim() == 3 else "HW")

    def how_to_view(self) -> str:
        return f"tensorboard --logdir {self.log_dir}"

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


class WandbLogger(Logger):
    """A wandb run writing under ``OUT/wandb``; online or offline as wandb's settings say."""

    kind = "wandb"

    def __init__(self, out_dir: str | Path, name: str, config: Mapping[str, Any] | None = None):
        import os

        import wandb

        self.wandb = wandb
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.run = wandb.init(project=os.environ.get("WANDB_PROJECT", "neural3d"), name=name,
                              dir=str(out), config=dict(config or {}))

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        self.run.log({k: float(v) for k, v in values.items()}, step=step)

    def images(self, images: Mapping[str, torch.Tensor], step: int) -> None:
        logged = {}
        for k, img in images.items():
            arr = (_image(img) * 255).round().to(torch.uint8).numpy()
            logged[k] = self.wandb.Image(arr)
        self.run.log(logged, step=step)

    def how_to_view(self) -> str:
        folder = Path(self.run.dir).parent  # OUT/wandb/<offline-run-...>
        if self.run.offline:
            return f"wandb (offline) run in {folder}: upload it with `wandb sync {folder}`"
        return f"wandb run {self.run.url} (files in {folder})"

    def close(self) -> None:
        self.run.finish()


def require_backend(kind: str) -> None:
    """Check that backend ``kind`` can be used (before a run starts): a bad name or a missing
    wandb package is a one-line :class:`~neural3d.config.ConfigError`."""
    import importlib.util

    from neural3d.config import ConfigError

    check_vis(kind)
    if kind == "wandb" and importlib.util.find_spec("wandb") is None:
        raise ConfigError("vis: wandb is not installed: pip install 'neural3d[wandb]' (or "
                          "--vis tensorboard)")


def make_logger(kind: str, out_dir: str | Path, name: str = "",
                config: Mapping[str, Any] | None = None) -> Logger | None:
    """The logger of ``train.vis = kind`` for the run folder ``out_dir`` (None for ``none``);
    ``name`` (default: the folder's name) and ``config`` describe the run to wandb. Errors as
    :func:`require_backend`."""
    require_backend(kind)
    if kind == "none":
        return None
    if kind == "tensorboard":
        return TensorBoardLogger(Path(out_dir) / "tb")
    return WandbLogger(out_dir, name or Path(out_dir).name, config)
