"""The shared training loop (see :mod:`neural3d.train` for the API)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import platform
import sys
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.distributed as dist
from torch import nn

from neural3d.config import Range, at_least, between, invalid
from neural3d.env_info import git_commit
from neural3d.train.checkpoint import CheckpointError, load_checkpoint, save_atomic
from neural3d.train.distributed import world_info
from neural3d.train.ema import EMA, rampup_decay
from neural3d.train.loggers import Logger, check_vis, make_logger


class NonFiniteLossError(RuntimeError):
    """A loss became NaN or infinite; the last good checkpoint is left untouched."""


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT during :meth:`Trainer.fit`: a checkpoint was saved at the step reached (the
    message says where)."""


@contextlib.contextmanager
def _deferred_sigint():
    """While active (main thread only), the first SIGINT only sets a flag that the training
    loop checks between steps (so a step is never cut in half); a second one raises
    KeyboardInterrupt at once. Yields the flag's getter."""
    import signal
    import threading

    hit = {"n": 0}
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return

    def handler(signum, frame):
        hit["n"] += 1
        if hit["n"] > 1:
            raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: hit["n"] > 0
    finally:
        signal.signal(signal.SIGINT, previous)


@dataclass
class TrainConfig:
    """The shared trainer's settings (the ``train:`` section of every method's config).

    ``resume``: ``""`` starts a fresh run (a run folder that already holds a run is refused
    unless ``overwrite``), ``"auto"`` continues ``OUT/checkpoints/last.pt`` when present (its
    config must match: :data:`neural3d.methods.training.RESUMABLE_KEYS`), a path continues
    that checkpoint. ``overwrite``: a fresh run may replace the run in ``out_dir``."""

    limits: ClassVar[dict[str, Range]] = {
        "steps": at_least(1), "log_every": at_least(1), "eval_every": at_least(0),
        "ckpt_every": at_least(0), "ema_decay": between(0, 1, hi_open=True),
        "ema_rampup": at_least(0), "grad_clip": at_least(0)}
    steps: int = 1000
    seed: int = 0
    out_dir: str = "runs/default"
    log_every: int = 10          # train/* scalars + progress-bar refresh
    eval_every: int = 0          # calls eval_fn (images/scalars) every N steps; 0 = only at end
    ckpt_every: int = 500        # 0 = only at the end
    ema_decay: float = 0.0       # 0 = no EMA
    ema_rampup: float = 0.0      # > 0: the EMA half-life is capped at ema_rampup * step
    #                              (StyleGAN2-ADA / SSDNeRF ramp-up; 0.05 there); 0 = fixed
    grad_clip: float = 0.0       # max grad norm (all optimisers; each one in manual mode); 0 = off
    amp: bool = True             # autocast on CUDA only (never on CPU)
    amp_dtype: str = "bf16"      # bf16 | fp16 (fp16 uses a GradScaler)
    progress: bool = True
    vis: str = "tensorboard"     # where scalars and images go: tensorboard | wandb | none
    tensorboard: bool = True     # false turns logging off whatever vis says (older configs)
    resume: str = "auto"         # "auto" (OUT/checkpoints/last.pt if present), a path, or ""
    time_budget: float = 0.0     # seconds of training before stopping early (0 = none; read
                                 # by neural3d.methods.train_method, evaluation not counted)
    overwrite: bool = False      # a fresh run (resume "") may replace the run in out_dir

    def validate(self) -> None:
        check_vis(self.vis)
        if self.amp_dtype not in ("bf16", "fp16"):
            raise invalid("amp_dtype", f"must be bf16 or fp16, got {self.amp_dtype!r}")
        if not str(self.out_dir).strip():
            raise invalid("out_dir", "is empty")
        if self.overwrite and self.resume:
            raise invalid("overwrite", f"replaces the run, resume={self.resume!r} continues it: "
                                       "set one of them")

    def log_backend(self) -> str:
        """The logger in use: ``vis``, or ``"none"`` when ``tensorboard`` is false."""
        return self.vis if self.tensorboard else "none"



def _versions() -> dict[str, str]:
    import numpy

    import neural3d

    return {"python": platform.python_version(), "torch": torch.__version__,
            "numpy": numpy.__version__, "neural3d": neural3d.__version__,
            "cuda": str(torch.version.cuda)}


def _to_float(v: Any) -> float:
    return float(v.detach().float().item()) if torch.is_tensor(v) else float(v)


MODEL = "model"  # the name of the single module of ``Trainer(model, ...)``
FORMAT = "neural3d-trainer-2"
_READABLE = ("neural3d-trainer-1", FORMAT)


def _named(value: Any, default: str, what: str) -> dict[str, Any]:
    """``None`` -> ``{}``, a mapping -> a dict of it, anything else -> ``{default: value}``."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        if not all(isinstance(k, str) and k for k in value):
            raise ValueError(f"{what} names must be non-empty strings, got {list(value)}")
        return dict(value)
    return {default: value}


def _params(opt: Any) -> list[torch.Tensor]:
    return [p for g in opt.param_groups for p in g["params"] if p.grad is not None]


class Trainer:
    """One loop for every method (see :mod:`neural3d.train` for the usage).

    Parameters:

    - ``modules``: one ``nn.Module`` (named ``"model"``) or a mapping ``{name: nn.Module}``
      (e.g. ``{"G": generator, "D": discriminator}``). Each is trained, checkpointed and, under
      ``torchrun``, wrapped in its own DDP (modules without trainable parameters are not).
    - ``optimizer``: one optimiser (named ``"main"``), a mapping ``{name: optimiser}``, or None
      when ``step_fn`` steps optimisers the trainer does not own.
    - ``cfg``: :class:`TrainConfig`.
    - ``scheduler``: an LR scheduler or ``{optimiser name: scheduler}``; a single scheduler
      belongs to the optimiser it wraps (``scheduler.optimizer``) or to the only optimiser.
      A scheduler steps once per trainer step in which its optimiser stepped.
    - ``record``: the method's own config (stored in ``run.json`` and in checkpoints).
    - ``device``: defaults to the device of the first parameter.
    - ``ema``: ``{module name: decay}``; by default ``{"model": cfg.ema_decay}`` when
      ``cfg.ema_decay > 0`` (which therefore needs the single-model form).
    - ``manual``: ``step_fn`` calls :meth:`backward_step` for each optimiser itself (GANs);
      otherwise the trainer back-propagates ``step_fn``'s ``loss`` and steps every optimiser.

    Attributes: ``modules[name]`` (DDP-wrapped under ``torchrun``: call these in ``step_fn``),
    ``raw[name]`` (the unwrapped modules), ``emas[name]`` (:class:`EMA`), ``optimizers``,
    ``schedulers``; for the single-model form ``model`` (= ``modules["model"]``), ``module``
    (= ``raw["model"]``) and ``ema`` (= ``emas.get("model")``).
    """

    def __init__(self, modules: nn.Module | Mapping[str, nn.Module], optimizer: Any,
                 cfg: TrainConfig | None = None, scheduler: Any = None,
                 record: Mapping[str, Any] | None = None,
                 device: str | torch.device | None = None, *,
                 ema: Mapping[str, float] | None = None, manual: bool = False):
        self.cfg = cfg or TrainConfig()
        self.raw: dict[str, nn.Module] = _named(modules, MODEL, "module")
        if not self.raw or not all(isinstance(m, nn.Module) for m in self.raw.values()):
            raise TypeError("modules must be an nn.Module or a non-empty {name: nn.Module}")
        self.device = torch.device(device) if device is not None else next(
            (p.device for m in self.raw.values() for p in m.parameters()), torch.device("cpu"))
        self.rank, self.world_size = world_info()
        self.modules: dict[str, nn.Module] = {k: self._wrap(m) for k, m in self.raw.items()}
        self.optimizers: dict[str, Any] = _named(optimizer, "main", "optimizer")
        self.manual = manual or optimizer is None
        self.schedulers = self._bind_schedulers(scheduler)
        self.record = dict(record or {})
        if ema is None:
            if self.cfg.ema_decay > 0 and MODEL not in self.raw:
                raise ValueError(f"train.ema_decay is the EMA of the single model; this trainer "
                                 f"holds {sorted(self.raw)}: pass ema={{name: decay}} instead")
            ema = {MODEL: self.cfg.ema_decay} if self.cfg.ema_decay > 0 else {}
        unknown = sorted(set(ema) - set(self.raw))
        if unknown:
            raise ValueError(f"ema names unknown modules {unknown} (modules: {sorted(self.raw)})")
        self.emas: dict[str, EMA] = {k: EMA(self.raw[k], d) for k, d in ema.items()}
        self.use_amp = bool(self.cfg.amp and self.device.type == "cuda")
        self.amp_dtype = torch.float16 if self.cfg.amp_dtype == "fp16" else torch.bfloat16
        self.scaler = torch.amp.GradScaler("cuda") if (
            self.use_amp and self.amp_dtype == torch.float16) else None
        self.step = 0
        self.stopped_early = False
        self.history: list[dict[str, float]] = []
        self.generators: dict[str, torch.Generator] = {}
        self.extra_state: dict[str, tuple[Callable[[], Any], Callable[[Any], None]]] = {}
        self.out_dir = Path(self.cfg.out_dir)
        self.ckpt_path = self.out_dir / "checkpoints" / "last.pt"
        self.last_good: Path | None = None
        self._stepped: set[str] = set()   # optimisers stepped during the current trainer step
        self._logger: Logger | None = None
        self._logger_made = False
        self._t0 = time.time()
        torch.manual_seed(self.cfg.seed)

    def _wrap(self, module: nn.Module) -> nn.Module:
        if self.world_size == 1 or not any(p.requires_grad for p in module.parameters()):
            return module
        from torch.nn.parallel import DistributedDataParallel as DDP

        return DDP(module, device_ids=[self.device.index] if self.device.type == "cuda" else None)

    def _bind_schedulers(self, scheduler: Any) -> dict[str, Any]:
        if scheduler is None or isinstance(scheduler, Mapping):
            bound = dict(scheduler or {})
            unknown = sorted(set(bound) - set(self.optimizers))
            if unknown:
                raise ValueError(f"schedulers name unknown optimisers {unknown} (optimisers: "
                                 f"{sorted(self.optimizers)})")
            return bound
        owner = [k for k, o in self.optimizers.items()
                 if o is getattr(scheduler, "optimizer", None)]
        if not owner and len(self.optimizers) == 1:
            owner = list(self.optimizers)
        if len(owner) != 1:
            raise ValueError("cannot tell which optimiser the scheduler belongs to: pass "
                             "scheduler={optimiser name: scheduler}")
        return {owner[0]: scheduler}

    def _single(self, table: Mapping[str, Any], attr: str) -> Any:
        if MODEL not in self.raw:
            raise AttributeError(f"trainer.{attr} is for the single-model form; this trainer "
                                 f"holds {sorted(self.raw)}: use the name")
        return table.get(MODEL)

    @property
    def model(self) -> nn.Module:
        """The single model as called in ``step_fn`` (DDP-wrapped under ``torchrun``)."""
        return self._single(self.modules, "model")

    @property
    def module(self) -> nn.Module:
        """The single model, unwrapped."""
        return self._single(self.raw, "module")

    @property
    def ema(self) -> EMA | None:
        """The EMA of the single model (None without one)."""
        return self._single(self.emas, "ema")

    # ---------------------------------------------------------------- randomness
    def generator(self, name: str, per_rank: bool = False) -> torch.Generator:
        """A named, seeded ``torch.Generator`` owned (and checkpointed) by the trainer.

        Its seed is derived from ``cfg.seed`` and ``name`` (plus the rank if ``per_rank``); the
        same name returns the same generator. Draw batches only from these for exact resume.
        """
        key = f"{name}@{self.rank}" if per_rank else name
        if key not in self.generators:
            g = torch.Generator(device="cpu")
            g.manual_seed((self.cfg.seed * 1_000_003 + zlib.crc32(key.encode())) % 2**63)
            self.generators[key] = g
        return self.generators[key]

    def register_state(self, name: str, get: Callable[[], Any], set_: Callable[[Any], None]
                       ) -> None:
        """Extra state of the method (e.g. an occupancy grid) saved in checkpoints."""
        self.extra_state[name] = (get, set_)

    # ---------------------------------------------------------------- checkpoints
    def state_dict(self) -> dict[str, Any]:
        """The checkpoint (layout ``neural3d-trainer-2``, see :mod:`neural3d.train`)."""
        modules = {k: m.state_dict() for k, m in self.raw.items()}
        emas = {k: e.state_dict() for k, e in self.emas.items()}
        return {
            "format": FORMAT,
            "step": self.step,
            "modules": modules,
            # the single-model keys of format 1, aliases (stored once) that readers use
            "model": modules.get(MODEL),
            "ema": emas.get(MODEL),
            "optimizers": {k: o.state_dict() for k, o in self.optimizers.items()},
            "schedulers": {k: s.state_dict() for k, s in self.schedulers.items()},
            "emas": emas,
            "scaler": self.scaler.state_dict() if self.scaler is not None else None,
            "generators": {k: g.get_state() for k, g in self.generators.items()},
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "history": self.history,
            "train_config": dataclasses.asdict(self.cfg),
            "record": self.record,
            "extra": {k: get() for k, (get, _) in self.extra_state.items()},
        }

    def load_state_dict(self, ckpt: Mapping[str, Any]) -> None:
        """Restore a checkpoint of format ``neural3d-trainer-2`` or ``-1`` (single model)."""
        fmt = ckpt.get("format", "neural3d-trainer-1")
        if fmt not in _READABLE:
            raise ValueError(f"unknown checkpoint format {fmt!r} (readable: {list(_READABLE)})")
        if fmt == "neural3d-trainer-1":
            modules = {MODEL: ckpt["model"]}
            emas = {MODEL: ckpt["ema"]} if ckpt.get("ema") is not None else {}
            old = ckpt.get("scheduler")
            schedulers = {k: old for k in self.schedulers} if old is not None else {}
        else:
            modules, emas, schedulers = ckpt["modules"], ckpt["emas"], ckpt["schedulers"]

        def need(table: Mapping[str, Any], name: str, what: str) -> Any:
            if name not in table:
                raise KeyError(f"the checkpoint has no {what} {name!r} (it has "
                               f"{sorted(table)})")
            return table[name]

        for k, m in self.raw.items():
            m.load_state_dict(need(modules, k, "module"))
        for k, o in self.optimizers.items():
            o.load_state_dict(need(ckpt["optimizers"], k, "optimiser"))
        for k, s in self.schedulers.items():
            if k in schedulers:
                s.load_state_dict(schedulers[k])
        for k, e in self.emas.items():
            if k in emas:
                e.load_state_dict(emas[k])
        if self.scaler is not None and ckpt.get("scaler") is not None:
            self.scaler.load_state_dict(ckpt["scaler"])
        for k, state in ckpt.get("generators", {}).items():
            # in place, so generators handed out before resuming continue correctly
            self.generators.setdefault(k, torch.Generator(device="cpu")).set_state(state)
        torch.set_rng_state(ckpt["torch_rng"])
        if torch.cuda.is_available() and ckpt.get("cuda_rng"):
            torch.cuda.set_rng_state_all(ckpt["cuda_rng"])
        for k, value in ckpt.get("extra", {}).items():
            if k in self.extra_state:
                self.extra_state[k][1](value)
        self.history = [dict(h) for h in ckpt.get("history", [])]
        self.step = int(ckpt["step"])

    def save(self, path: str | Path | None = None) -> Path | None:
        """Write a checkpoint atomically (rank 0 only); returns its path."""
        path = Path(path) if path is not None else self.ckpt_path
        if self.rank == 0:
            save_atomic(self.state_dict(), path)
            self.last_good = path
        if self.world_size > 1:
            dist.barrier()
        return path

    def maybe_resume(self) -> bool:
        """Resume per ``cfg.resume``; True when a checkpoint was loaded."""
        r = self.cfg.resume
        if not r:
            return False
        path = self.ckpt_path if r == "auto" else Path(r)
        if r == "auto" and not path.is_file():
            return False
        self.resume_from(load_checkpoint(path, map_location=self.device), path)
        return True

    def resume_from(self, ckpt: Mapping[str, Any], path: str | Path) -> None:
        """Restore ``ckpt`` (read from ``path``); a checkpoint that does not fit this trainer's
        modules, optimisers or extra state is a :class:`CheckpointError` naming ``path``."""
        try:
            self.load_state_dict(ckpt)
        except CheckpointError as exc:
            raise CheckpointError(f"cannot resume from {path}: {exc}") from exc
        except (KeyError, ValueError, RuntimeError, TypeError) as exc:
            detail = " ".join(str(exc).split())[:300]
            raise CheckpointError(f"cannot resume from {path}: {detail}") from exc
        self.last_good, self._last_good_step = Path(path), self.step

    # ---------------------------------------------------------------- logging
    def _write_run_json(self, status: str, **extra: Any) -> None:
        if self.rank != 0:
            return
        self.out_dir.mkdir(parents=True, exist_ok=True)
        info = {
            "status": status, "step": self.step, "seed": self.cfg.seed,
            "train_config": dataclasses.asdict(self.cfg), "config": self.record,
            "versions": _versions(), "git": git_commit(), "world_size": self.world_size,
            "device": str(self.device), "amp": self.use_amp, "argv": sys.argv,
            "host": platform.node(), "started": self._t0, **extra,
        }
        tmp = self.out_dir / ".run.json.tmp"
        tmp.write_text(json.dumps(info, indent=2, default=str))
        os.replace(tmp, self.out_dir / "run.json")

    @property
    def logger(self) -> Logger | None:
        """The logger of ``cfg.vis`` (:mod:`neural3d.train.loggers`), made on first use; None
        on ranks other than 0 and when logging is off."""
        if not self._logger_made:
            self._logger_made = True
            if self.rank == 0:
                self._logger = make_logger(self.cfg.log_backend(), self.out_dir,
                                           config=self.record)
        return self._logger

    def log_images(self, images: Mapping[str, torch.Tensor], step: int | None = None) -> None:
        """Images ``[H, W, 3]`` (or ``[H, W]``) floats in [0, 1] to the logger."""
        if images and self.logger is not None:
            self.logger.images(images, step if step is not None else self.step)

    def log_scalars(self, scalars: Mapping[str, float], step: int | None = None) -> None:
        if scalars and self.logger is not None:
            self.logger.scalars({k: _to_float(v) for k, v in scalars.items()},
                                step if step is not None else self.step)

    # ---------------------------------------------------------------- the loop
    def _reduce(self, out: Mapping[str, Any]) -> dict[str, float]:
        keys = sorted(k for k, v in out.items()
                      if (torch.is_tensor(v) and v.numel() == 1) or isinstance(v, (int, float)))
        vals = torch.tensor([_to_float(out[k]) for k in keys], dtype=torch.float64)
        if self.world_size > 1:
            vals = vals.to(self.device)
            dist.all_reduce(vals)
            vals = vals.cpu() / self.world_size
        return dict(zip(keys, vals.tolist(), strict=True))

    def _nonfinite(self, loss: torch.Tensor, out: Mapping[str, Any], step: int,
                   what: str = "loss") -> None:
        """Raise :class:`NonFiniteLossError` (on every rank) when ``loss`` is NaN or inf."""
        bad = not bool(torch.isfinite(loss.detach()).all())
        if self.world_size > 1:
            flag = torch.tensor([float(bad)], device=self.device)
            dist.all_reduce(flag)
            bad = flag.item() > 0
        if bad:
            values = {k: _to_float(v) for k, v in out.items()
                      if torch.is_tensor(v) and v.numel() == 1}
            where = (f"the last good checkpoint is {self.last_good} (step "
                     f"{self._last_good_step})" if self.last_good else "no checkpoint was written "
                     "yet")
            self._write_run_json("nonfinite", error=f"non-finite {what} at step {step}")
            raise NonFiniteLossError(
                f"non-finite {what} at step {step}: {values}. Training stopped; {where}. Lower "
                "the learning rate, enable grad_clip, or check the inputs of this step.")

    def _amp_off(self) -> contextlib.AbstractContextManager:
        """Backward outside autocast (``step_fn`` runs inside it)."""
        return (torch.autocast("cuda", enabled=False) if self.use_amp
                else contextlib.nullcontext())

    def backward_step(self, loss: torch.Tensor, name: str | None = None) -> torch.Tensor | None:
        """Manual mode: one optimiser step on ``loss`` for the optimiser ``name``.

        Checks ``loss`` (NaN/inf raises :class:`NonFiniteLossError`, all ranks together),
        zeroes that optimiser's gradients, back-propagates outside autocast (scaled by the
        GradScaler for fp16), clips the gradient norm of its parameters to ``cfg.grad_clip`` and
        steps it (its scheduler steps once at the end of the trainer step, after which EMAs
        update). Gradients that ``loss`` leaves on other optimisers' parameters are zeroed by
        their own next ``backward_step``. Call it inside ``step_fn``, any number of times per
        step (e.g. several discriminator steps). Returns the gradient norm before clipping
        (None when ``cfg.grad_clip`` is 0).
        """
        if not self.manual:
            raise RuntimeError("backward_step is for manual mode: build the Trainer with "
                               "manual=True (otherwise it steps the optimisers itself)")
        if name is None:
            if len(self.optimizers) != 1:
                raise ValueError(f"name the optimiser: one of {sorted(self.optimizers)}")
            name = next(iter(self.optimizers))
        if name not in self.optimizers:
            raise KeyError(f"no optimiser {name!r} (optimisers: {sorted(self.optimizers)})")
        opt = self.optimizers[name]
        self._nonfinite(loss, {name: loss}, self.step, what=f"loss of optimiser {name!r}")
        opt.zero_grad(set_to_none=True)
        with self._amp_off():
            if self.scaler is not None:
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(opt)
            else:
                loss.backward()
        norm = (torch.nn.utils.clip_grad_norm_(_params(opt), self.cfg.grad_clip)
                if self.cfg.grad_clip > 0 else None)
        if self.scaler is not None:
            # the whole scale -> step cycle happens here, so updating per call is consistent
            self.scaler.step(opt)
            self.scaler.update()
        else:
            opt.step()
        self._stepped.add(name)
        return norm

    def _auto_step(self, out: Mapping[str, Any]) -> Mapping[str, Any]:
        """Backward ``out["loss"]``, clip over all optimisers' parameters, step all."""
        loss = out["loss"]  # step_fn's autocast region has ended
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            for o in self.optimizers.values():
                self.scaler.unscale_(o)
        else:
            loss.backward()
        if self.cfg.grad_clip > 0:
            params = [p for o in self.optimizers.values() for p in _params(o)]
            out = dict(out)
            out["grad_norm"] = torch.nn.utils.clip_grad_norm_(params, self.cfg.grad_clip)
        for o in self.optimizers.values():
            if self.scaler is not None:
                self.scaler.step(o)
            else:
                o.step()
        if self.scaler is not None:
            self.scaler.update()
        self._stepped.update(self.optimizers)
        return out

    _last_good_step: int = 0

    def fit(self, step_fn: Callable[[int], Mapping[str, Any]], steps: int | None = None,
            eval_fn: Callable[[int], Mapping[str, Any]] | None = None,
            stop_fn: Callable[[int], bool] | None = None,
            ) -> list[dict[str, float]]:
        """Run ``step_fn(step)`` from ``self.step`` to ``steps`` (default ``cfg.steps``).

        ``step_fn`` returns a dict of scalars that contains ``loss`` (and optionally ``psnr``);
        the trainer does backward, clipping and the optimiser steps (in manual mode ``step_fn``
        does them through :meth:`backward_step`), then schedulers step and EMAs update.
        ``eval_fn(step)`` may return scalars and images (tensors ``[H,W,3]``) logged under
        ``eval/`` (:attr:`logger`). ``stop_fn(step)`` returning True ends
        training early after that step (e.g. a time budget); the checkpoint is then written as
        at the end. Returns the history of logged scalars.

        How the run ended is recorded in ``run.json`` (``status``): ``finished``,
        ``interrupted`` (SIGINT/Ctrl-C: the step in progress completes, a checkpoint is saved at
        that step and :class:`TrainingInterrupted` is raised; a second Ctrl-C stops at once),
        ``nonfinite`` (:class:`NonFiniteLossError`) or ``failed`` (any other error, recorded).
        """
        total = int(steps if steps is not None else self.cfg.steps)
        self._write_run_json("running")
        try:
            with _deferred_sigint() as interrupted:
                self._loop(step_fn, total, eval_fn, stop_fn, interrupted)
                if interrupted() and self.step < total:
                    raise self._interrupt()
                if eval_fn is not None:
                    self._run_eval(eval_fn)
                self.save()
                self._last_good_step = self.step
        except TrainingInterrupted:
            raise
        except KeyboardInterrupt:  # a second Ctrl-C, or one outside the loop
            self._try_run_json("interrupted", error="interrupted (no checkpoint at this step)")
            raise
        except NonFiniteLossError:
            raise
        except BaseException as exc:
            self._try_run_json("failed", error=f"{type(exc).__name__}: {exc}")
            raise
        self._write_run_json("finished", seconds=time.time() - self._t0,
                             final={k: v for k, v in self.history[-1].items()}
                             if self.history else {})
        if self._logger is not None:
            self._logger.flush()
        return self.history

    def _interrupt(self) -> TrainingInterrupted:
        """Save at the current step after a SIGINT; the exception to raise."""
        path = self.save()
        self._last_good_step = self.step
        self._write_run_json("interrupted", seconds=time.time() - self._t0)
        return TrainingInterrupted(f"interrupted at step {self.step}; checkpoint saved to {path} "
                                   "(continue with --resume / train.resume=auto)")

    def _try_run_json(self, status: str, **extra: Any) -> None:
        try:
            self._write_run_json(status, **extra)
        except OSError:  # e.g. the disk that just filled up
            pass

    def _loop(self, step_fn, total: int, eval_fn, stop_fn, interrupted) -> None:
        bar = None
        if self.cfg.progress and self.rank == 0:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=self.step, desc="train", unit="step",
                       dynamic_ncols=True, leave=True)
        ckpt_every = self.cfg.ckpt_every
        t_last, s_last = time.time(), self.step
        try:
            while self.step < total and not interrupted():
                step = self.step
                self._stepped = set()
                for o in self.optimizers.values():
                    o.zero_grad(set_to_none=True)
                ctx = (torch.autocast("cuda", dtype=self.amp_dtype) if self.use_amp
                       else contextlib.nullcontext())
                with ctx:
                    out = step_fn(step)
                if "loss" not in out:
                    raise KeyError("step_fn must return a dict containing 'loss'")
                self._nonfinite(out["loss"], out, step)
                if not self.manual:
                    out = self._auto_step(out)
                for k, sched in self.schedulers.items():
                    if k in self._stepped:
                        sched.step()
                for k, e in self.emas.items():
                    e.update(self.raw[k], rampup_decay(e.decay, step, self.cfg.ema_rampup))
                scalars = self._reduce(out)
                scalars["step"] = step
                self.history.append(scalars)
                self.step = step + 1
                if self.step % max(self.cfg.log_every, 1) == 0 or self.step == total:
                    now = time.time()
                    rate = (self.step - s_last) / max(now - t_last, 1e-9)
                    t_last, s_last = now, self.step
                    self.log_scalars({f"train/{k}": v for k, v in scalars.items()
                                      if k != "step"} | {"train/steps_per_s": rate})
                    if bar is not None:
                        post = {"loss": f"{scalars['loss']:.4g}"}
                        if "psnr" in scalars:
                            post["psnr"] = f"{scalars['psnr']:.2f}"
                        bar.set_postfix(post, refresh=False)
                if bar is not None:
                    bar.update(1)
                if eval_fn is not None and self.cfg.eval_every and \
                        self.step % self.cfg.eval_every == 0 and self.step < total:
                    self._run_eval(eval_fn)
                if ckpt_every and self.step % ckpt_every == 0 and self.step < total:
                    self.save()
                    self._last_good_step = self.step
                if stop_fn is not None and stop_fn(self.step):
                    self.stopped_early = self.step < total
                    break
        finally:
            if bar is not None:
                bar.close()

    def _run_eval(self, eval_fn: Callable[[int], Mapping[str, Any]]) -> None:
        res = eval_fn(self.step) or {}
        images = {k: v for k, v in res.items() if torch.is_tensor(v) and v.dim() >= 2}
        scalars = {k: v for k, v in res.items() if k not in images and
                   isinstance(v, (int, float, torch.Tensor)) and not (
                       isinstance(v, float) and math.isnan(v))}
        self.log_images({f"eval/{k}": v for k, v in images.items()})
        self.log_scalars({f"eval/{k}": v for k, v in scalars.items()})

    def close(self) -> None:
        """Close the logger (a later log call opens a new one)."""
        if self._logger is not None:
            self._logger.close()
        self._logger, self._logger_made = None, False
