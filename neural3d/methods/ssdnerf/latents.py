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


class LatentCache:
    """``N`` latents of shape ``shape`` plus Adam moments; in memory or file-backed."""

    FIELDS = ("latents", "exp_avg", "exp_avg_sq")

    def __init__(self, num: int, shape: Sequence[int], init_std: float = 0.0,
                 path: str | Path | None = None, generator: torch.Generator | None = None):
        self.num, self.shape = int(num), tuple(int(s) for s in shape)
        self.path = Path(path) if path else None
        if self.path is not None:
            self.path.mkdir(parents=True, exist_ok=True)
            n = self.num * math.prod(self.shape)
            fresh = not (self.path / "latents.f32").is_file()
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
            return {"path": str(self.path), "shape": list(self.shape), "num": self.num,
                    "steps": self.steps.clone()}
        return {"shape": list(self.shape), "num": self.num, "steps": self.steps.clone(),
                **{k: t.clone() for k, t in self.tensors.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if list(state["shape"]) != list(self.shape) or int(state["num"]) != self.num:
            raise ValueError(f"latent cache mismatch: checkpoint has {state['num']} x "
                             f"{state['shape']}, this run {self.num} x {list(self.shape)}")
        self.steps.copy_(state["steps"])
        if "latents" in state:
            for k in self.FIELDS:
                self.tensors[k].copy_(state[k])
        elif self.path is None or Path(state["path"]).resolve() != self.path.resolve():
            other = LatentCache(self.num, self.shape, path=state["path"])
            for k in self.FIELDS:
                self.tensors[k].copy_(other.tensors[k])


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
