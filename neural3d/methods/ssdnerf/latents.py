"""Latent cache for thousands of auto-decoded objects, with per-object Adam state.

SSDNeRF fits one triplane latent per training object. For ShapeNet cars (2458 objects at
3x6x128x128) the latents and their Adam moments take ~5 GB, so they never live on the GPU as a
whole: :class:`LatentCache` keeps ``latents``, ``exp_avg``, ``exp_avg_sq`` ``[N, ...]`` and the
per-object Adam step count ``[N]`` in CPU memory, optionally **file-backed** (``path``: four
raw float32 files mapped with ``torch.from_file(shared=True)``, so the OS pages them).

:class:`LatentAdam` is the optimiser face the shared :class:`~neural3d.train.Trainer` sees:
``fetch(idx)`` moves only the batch's rows to the device as a leaf tensor that requires grad;
after the trainer's ``backward``, ``step()`` applies Adam to those rows with their own moments and
step counts (objects are visited irregularly, so bias correction is per object) and writes them
back. ``zero_grad``, ``param_groups`` (the current batch leaf, so gradient clipping includes it),
``state_dict`` and ``load_state_dict`` make it checkpointable like a torch optimiser. Under DDP
each rank updates the rows of its own batch and the updated rows (with their moments) are
all-gathered, so every rank holds the same cache.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from neural3d.train.checkpoint import CheckpointError


def cache_folder(root: str | Path, path: str | Path, what: str = "latent cache path") -> Path:
    """``root / path`` for a cache ``path`` that must stay inside ``root`` (the run folder):
    absolute paths and ``..`` are refused (:class:`CheckpointError` naming ``what``), so neither a
    config nor a checkpoint can point the library's reads or writes elsewhere."""
    p = Path(str(path))
    if p.is_absolute() or ".." in p.parts or str(path).strip() in ("", "."):
        raise CheckpointError(f"{what} {str(path)!r} must be a folder name inside the run folder "
                              "(relative, without '..')")
    return Path(root) / p


class LatentCache:
    """``N`` latents of shape ``shape`` plus Adam moments; in memory or file-backed.

    File-backed (``path`` given): the files live in ``root / path`` (``root`` is the run folder,
    ``path`` a relative folder name, see :func:`cache_folder`) and are created zero-filled when
    missing (a new training run); the checkpoint stores ``path`` (relative), ``num``, ``shape``
    and the step counts, never the tensors. Resuming (:meth:`load_state_dict`) from a
    checkpoint whose files are gone is an error naming them, not a restart from zeros.
    :func:`read_latents` reads them back for inference without creating anything."""

    FIELDS = ("latents", "exp_avg", "exp_avg_sq")

    def __init__(self, num: int, shape: Sequence[int], init_std: float = 0.0,
                 path: str | Path | None = None, generator: torch.Generator | None = None,
                 root: str | Path = "."):
        self.num, self.shape = int(num), tuple(int(s) for s in shape)
        if self.num < 1 or not self.shape or min(self.shape) < 1:
            raise ValueError(f"latent cache needs num >= 1 and a positive shape, got "
                             f"{self.num} x {list(self.shape)}")
        self.rel = str(path) if path else None
        self.path = cache_folder(root, path) if path else None
        self.created: list[Path] = []   # files this instance made (zero-filled)
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            n = self.num * math.prod(self.shape)
            fresh = not (self.path / "latents.f32").is_file()
            self.created = [self.path / f"{k}.f32" for k in self.FIELDS
                            if not (self.path / f"{k}.f32").is_file()]
            for k in self.FIELDS:
                f = self.path / f"{k}.f32"
                if f.is_file() and f.stat().st_size != 4 * n:
                    raise ValueError(f"{f}: holds {f.stat().st_size} bytes, this cache needs "
                                     f"{4 * n} ({self.num} x {list(self.shape)} float32)")
            self.tensors = {k: torch.from_file(str(self.path / f"{k}.f32"), shared=True, size=n,
                                               dtype=torch.float32).view(self.num, *self.shape)
                            for k in self.FIELDS}
            if fresh:
                for t in self.tensors.values():
                    t.zero_()
        else:
            self.tensors = {k: torch.zeros(self.num, *self.shape) for k in self.FIELDS}
            fresh = True
        self.steps = torch.zeros(self.num, dtype=torch.int64)
        if fresh and init_std > 0:
            self.tensors["latents"].copy_(torch.randn(self.num, *self.shape,
                                                      generator=generator) * init_std)

    @property
    def latents(self) -> torch.Tensor:
        return self.tensors["latents"]

    def rows(self, idx: torch.Tensor, device=None) -> dict[str, torch.Tensor]:
        idx = idx.cpu()
        out = {k: t[idx].to(device) for k, t in self.tensors.items()}
        out["steps"] = self.steps[idx].to(device)
        return out

    def write(self, idx: torch.Tensor, rows: dict[str, torch.Tensor]) -> None:
        idx = idx.cpu()
        for k in self.FIELDS:
            self.tensors[k][idx] = rows[k].detach().to("cpu", torch.float32)
        self.steps[idx] = rows["steps"].cpu()

    def flush(self) -> None:
        """File-backed tensors are shared mappings; nothing is buffered in Python."""

    def state_dict(self) -> dict[str, Any]:
        if self.path is not None:  # the big tensors stay in their files
            return {"path": self.rel, "shape": list(self.shape), "num": self.num,
                    "steps": self.steps.clone()}
        return {"shape": list(self.shape), "num": self.num, "steps": self.steps.clone(),
                **{k: t.clone() for k, t in self.tensors.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume: the counts and shape must match; a file-backed state must name this cache's
        own folder and its files must have existed before this cache was made (they hold the
        tensors: files created now hold zeros, so they are removed again and the missing one
        named); an in-memory state is copied."""
        check_state(state, self.shape)
        if int(state["num"]) != self.num:
            raise CheckpointError(f"latent cache mismatch: checkpoint has {state['num']} x "
                                  f"{list(state['shape'])}, this run {self.num} x "
                                  f"{list(self.shape)}")
        if "latents" in state:
            for k in self.FIELDS:
                self.tensors[k].copy_(state[k])
        elif self.rel is None or Path(state["path"]) != Path(self.rel):
            where = "in memory" if self.rel is None else f"in {self.rel!r}"
            raise CheckpointError(f"latent cache mismatch: the checkpoint's latents are in the "
                                  f"files of {state['path']!r}, this run keeps them {where}")
        elif self.created:
            missing = self.created[0]
            for f in self.created:
                f.unlink(missing_ok=True)
            raise CheckpointError(f"{missing}: latent cache file is missing (the checkpoint "
                                  "keeps its latents there; restore it, or start a new run)")
        self.steps.copy_(state["steps"])


def check_state(state: Any, shape: Sequence[int]) -> None:
    """Validate a checkpoint's cache state against the latent ``shape`` the config implies:
    ``num``, ``shape``, ``steps [num]`` and either the three tensors ``[num, *shape]`` or a
    safe relative ``path`` (:class:`CheckpointError` naming what is wrong)."""
    if not isinstance(state, dict) or not {"num", "shape", "steps"} <= set(state):
        raise CheckpointError("latent cache state needs 'num', 'shape' and 'steps'")
    shape = [int(s) for s in shape]
    if [int(s) for s in state["shape"]] != shape:
        raise CheckpointError(f"latent cache mismatch: checkpoint has {state['num']} x "
                         f"{list(state['shape'])}, the config implies latents of shape {shape}")
    num = int(state["num"])
    steps = state["steps"]
    if num < 1 or not torch.is_tensor(steps) or tuple(steps.shape) != (num,):
        raise CheckpointError(f"latent cache state: 'steps' must be a tensor [{num}]")
    if "latents" in state:
        for k in LatentCache.FIELDS:
            t = state.get(k)
            if not torch.is_tensor(t) or list(t.shape) != [num, *shape]:
                raise CheckpointError(f"latent cache state: {k!r} must be a tensor "
                                      f"{[num, *shape]}")
    else:
        cache_folder(".", state.get("path") or "", "checkpoint's latent cache path")


def cache_file(root: str | Path, state: dict[str, Any], shape: Sequence[int]) -> Path:
    """The ``latents.f32`` of a file-backed checkpoint cache ``state`` (its path relative to the
    run folder ``root``), checked to exist with the size ``num x shape``
    float32: :class:`CheckpointError` naming the file otherwise. Reads and creates nothing."""
    check_state(state, shape)
    f = cache_folder(root, state["path"], "checkpoint's latent cache path") / "latents.f32"
    if not f.is_file():
        raise CheckpointError(f"{f}: latent cache file is missing (the checkpoint keeps its "
                              "latents there)")
    need = 4 * int(state["num"]) * math.prod(int(s) for s in shape)
    if f.stat().st_size != need:
        raise CheckpointError(f"{f}: holds {f.stat().st_size} bytes, the checkpoint needs {need} "
                              f"({state['num']} x {list(shape)} float32)")
    return f


def read_latents(root: str | Path, state: dict[str, Any], shape: Sequence[int]) -> torch.Tensor:
    """The latents ``[num, *shape]`` of a checkpoint's cache ``state`` for inference, read
    (never created or written) from :func:`cache_file` when file-backed; ``root`` is the run
    folder."""
    import numpy as np

    check_state(state, shape)
    if "latents" in state:
        return state["latents"]
    f = cache_file(root, state, shape)
    return torch.from_numpy(np.fromfile(f, dtype=np.float32)).view(
        int(state["num"]), *[int(s) for s in shape])


class LatentAdam:
    """Adam over the rows of a :class:`LatentCache`; see the module docstring."""

    def __init__(self, cache: LatentCache, lr: float = 1e-2, betas=(0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        self.cache = cache
        self.defaults = {"lr": lr, "betas": tuple(betas), "eps": eps,
                         "weight_decay": weight_decay}
        self.param_groups: list[dict[str, Any]] = [dict(self.defaults, params=[])]
        self._idx: torch.Tensor | None = None
        self._rows: dict[str, torch.Tensor] | None = None
        self.frozen = False

    def fetch(self, idx: torch.Tensor, device=None, requires_grad: bool = True) -> torch.Tensor:
        """The batch's latents ``[B, ...]`` on ``device`` as a leaf (grad enabled)."""
        self._idx = idx.cpu().clone()
        self._rows = self.cache.rows(self._idx, device)
        leaf = self._rows["latents"].clone().requires_grad_(requires_grad and not self.frozen)
        self.param_groups[0]["params"] = [leaf] if leaf.requires_grad else []
        return leaf

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.param_groups[0]["params"]:
            p.grad = None

    @torch.no_grad()
    def step(self, closure=None) -> None:
        params = self.param_groups[0]["params"]
        if self.frozen or not params or params[0].grad is None or self._rows is None:
            self._gather_update(None)
            return
        g = self.param_groups[0]
        lr, (b1, b2), eps, wd = g["lr"], g["betas"], g["eps"], g["weight_decay"]
        p = params[0]
        grad = p.grad
        if wd:
            grad = grad + wd * p
        rows = self._rows
        steps = rows["steps"] + 1
        m = rows["exp_avg"].mul_(b1).add_(grad, alpha=1 - b1)
        v = rows["exp_avg_sq"].mul_(b2).addcmul_(grad, grad, value=1 - b2)
        view = (-1,) + (1,) * (p.dim() - 1)
        bc1 = (1 - b1 ** steps.double()).float().view(view)
        bc2 = (1 - b2 ** steps.double()).float().view(view)
        new = p - lr * (m / bc1) / ((v / bc2).sqrt() + eps)
        self._gather_update({"latents": new, "exp_avg": m, "exp_avg_sq": v, "steps": steps})

    def _gather_update(self, rows: dict[str, torch.Tensor] | None) -> None:
        import torch.distributed as dist

        world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
        if world == 1:
            if rows is not None:
                self.cache.write(self._idx, rows)
            return
        # every rank must take part even when its own batch did not step
        idx = self._idx
        dev = self._rows["latents"].device
        if rows is None:
            rows = {k: self._rows[k] for k in ("latents", "exp_avg", "exp_avg_sq", "steps")}
        flat = torch.cat([rows[k].flatten(1).float() for k in LatentCache.FIELDS]
                         + [rows["steps"][:, None].float(), idx[:, None].float().to(dev)], 1)
        gathered = [torch.empty_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat.contiguous())
        allrows = torch.cat(gathered, 0).cpu()
        n = math.prod(self.cache.shape)
        out = {k: allrows[:, i * n:(i + 1) * n].reshape(-1, *self.cache.shape)
               for i, k in enumerate(LatentCache.FIELDS)}
        out["steps"] = allrows[:, 3 * n].round().long()
        self.cache.write(allrows[:, 3 * n + 1].round().long(), out)

    def state_dict(self) -> dict[str, Any]:
        g = self.param_groups[0]
        return {"cache": self.cache.state_dict(),
                "hparams": {k: g[k] for k in ("lr", "betas", "eps", "weight_decay")}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.cache.load_state_dict(state["cache"])
        hp = state.get("hparams", {})
        for k, v in hp.items():
            self.param_groups[0][k] = tuple(v) if k == "betas" else v
