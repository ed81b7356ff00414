"""Device selection shared by every command that computes: ``--device auto|cpu|cuda[:N]``."""

from __future__ import annotations

import os

import torch

from neural3d.config import ConfigError

DEVICE_CHOICES = "auto | cpu | cuda | cuda:N"


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """``auto`` (or None): CUDA when present (the ``LOCAL_RANK``-th GPU under torchrun), else
    the CPU; ``cpu``; ``cuda`` / ``cuda:N`` (a :class:`~neural3d.config.ConfigError` when no
    GPU is visible)."""
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if not torch.cuda.is_available():
            return torch.device("cpu")
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0"))
                            % torch.cuda.device_count())
    try:
        dev = torch.device(spec)
    except RuntimeError as exc:
        raise ConfigError(f"--device {spec!r}: not a device ({DEVICE_CHOICES})") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {spec}: no CUDA GPU is visible (use auto or cpu)")
    if dev.type not in ("cpu", "cuda"):
        raise ConfigError(f"--device {spec!r}: only {DEVICE_CHOICES} are supported")
    return dev
