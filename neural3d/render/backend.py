"""Which backend runs the fused ops (compositing, triplane sampling): the CUDA kernels, the C++
CPU kernels or the torch reference.

Choice, strongest first: the ``backend=`` argument (:func:`neural3d.render.composite`,
:func:`neural3d.fields.triplane_sample`), the environment variable
``NEURAL3D_BACKEND=torch|cpp|cuda``, then automatic (``cuda`` for CUDA tensors, ``cpp`` for CPU
tensors). A backend that cannot be built, loaded or used for the tensors'
device falls back to the next one (cuda -> cpp -> torch) with one clear warning; never a crash.
"""

from __future__ import annotations

import os
import threading
import warnings
from types import ModuleType
from typing import Any

import torch

BACKENDS = ("torch", "cpp", "cuda")
ENV_VAR = "NEURAL3D_BACKEND"

_lock = threading.Lock()
_modules: dict[str, ModuleType] = {}
_errors: dict[str, str] = {}
_warned: set[str] = set()


def _warn_once(key: str, message: str) -> None:
    if key not in _warned:
        _warned.add(key)
        warnings.warn(message, RuntimeWarning, stacklevel=4)


def requested_backend(backend: str | None = None) -> str | None:
    """The forced backend (argument, then ``$NEURAL3D_BACKEND``), or None for automatic."""
    choice = backend if backend not in (None, "", "auto") else os.environ.get(ENV_VAR, "")
    choice = (choice or "").strip().lower()
    if choice in ("", "auto"):
        return None
    if choice not in BACKENDS:
        _warn_once(f"bad:{choice}", f"neural3d: unknown backend {choice!r} (from "
                   f"{'argument' if backend else ENV_VAR}); expected one of {BACKENDS}; "
                   "choosing automatically")
        return None
    return choice


def _load(name: str) -> ModuleType | None:
    """The extension module for ``cpp``/``cuda``, building it on first use; None if it fails."""
    if name in _modules:
        return _modules[name]
    if name in _errors:
        return None
    with _lock:
        if name in _modules or name in _errors:
            return _modules.get(name)
        try:
            from neural3d.render import build

            if name == "cuda":
                if not torch.cuda.is_available():
                    raise RuntimeError("no CUDA device available")
                mod = build.load_cuda()
            else:
                mod = build.load_cpu()
            _modules[name] = mod
            return mod
        except Exception as exc:  # a build failure must never crash the caller
            msg = f"{type(exc).__name__}: {exc}".strip().splitlines()
            _errors[name] = (msg[0] if msg else type(exc).__name__)[:300]
            return None


def get_module(name: str) -> ModuleType | None:
    return _load(name)


def select(device: torch.device, backend: str | None = None) -> tuple[str, ModuleType | None]:
    """Return ``(name, extension module or None for torch)`` for tensors on ``device``."""
    forced = requested_backend(backend)
    chain = ["cuda", "torch"] if device.type == "cuda" else ["cpp", "torch"]
    if forced == "torch":
        return "torch", None
    if forced is not None and forced not in chain:
        _warn_once(f"device:{forced}:{device.type}",
                   f"neural3d: backend {forced!r} cannot process {device.type} tensors; "
                   f"using {chain[0]!r} (then torch) instead")
    for name in chain:
        if name == "torch":
            break
        mod = _load(name)
        if mod is not None:
            return name, mod
        _warn_once(f"fail:{name}", f"neural3d: the {name} kernels (compositing, triplane "
                   f"sampling) are unavailable ({_errors.get(name)}); falling back to the torch "
                   "reference")
    return "torch", None


def describe(build: bool = False) -> dict[str, Any]:
    """Backend report for ``neural3d info``: active backends, available ones, why others are not.

    Does not compile anything unless ``build=True``: a kernel that is not built yet is reported
    as such (it compiles on first use).
    """
    from neural3d.render import build as b

    info: dict[str, Any] = {"forced": os.environ.get(ENV_VAR) or None}
    try:
        info["sources"] = str(b.source_dir())
    except FileNotFoundError as exc:
        info["sources"] = None
        _errors.setdefault("cpp", str(exc))
        _errors.setdefault("cuda", str(exc))
    try:
        info["build_dir"] = str(b.build_root())
    except Exception as exc:  # pragma: no cover - home directory problems
        info["build_dir"] = f"unavailable: {exc}"
    available = ["torch"]
    why: dict[str, str] = {}
    pending: list[str] = []
    for name, kind in (("cpp", "cpu"), ("cuda", "cuda")):
        if name == "cuda" and not torch.cuda.is_available():
            why[name] = "no CUDA device (torch.cuda.is_available() is False)"
            continue
        if name not in _modules and name not in _errors and not build and not b.is_built(kind):
            pending.append(name)
            why[name] = "not built yet: compiles on first use"
            continue
        if _load(name) is not None:
            available.append(name)
        else:
            why[name] = _errors.get(name, "unknown error")
    forced = requested_backend()
    active = {}
    for dev in ["cpu"] + (["cuda"] if torch.cuda.is_available() else []):
        native = "cuda" if dev == "cuda" else "cpp"
        if forced == "torch":
            active[dev] = "torch"
        elif native in available:
            active[dev] = native
        elif native in pending:
            active[dev] = f"{native} (after first-use build)"
        else:
            active[dev] = "torch"
    info["active"] = active
    info["available"] = available
    info["unavailable"] = why
    if "cpp" in _modules:
        try:
            info["cpu_simd"] = _modules["cpp"].simd_isa()
            info["cpu_threads"] = _modules["cpp"].parallel_threads()
        except Exception:  # pragma: no cover
            pass
    return info


def prepare(device: torch.device | str, backend: str | None = None) -> str:
    """Select (building if needed) the compositing backend for tensors on ``device`` now, so that
    a first-use kernel build (announced on stderr by :mod:`neural3d.render.build`) happens
    before any training clock starts. Returns the backend's name."""
    device = torch.device(device)
    return select(device, backend)[0]
