"""Training any registered method: build, the shared trainer, ``step``, ``finish``.

``train_method(method)`` is what ``neural3d train METHOD`` runs: it starts torch.distributed
when launched by torchrun, validates the config, checks the run folder (:func:`prepare_run`),
builds the compositing kernel before any clock starts, writes the run folder's
``config.yaml``, builds the method's modules and optimisers, hands them to
:class:`~neural3d.train.Trainer` together with the method's record (so that the checkpoint can
be rebuilt by :func:`neural3d.methods.load`), resumes and runs ``method.step`` until
``train.steps``.

**Run folders.** ``train.resume``:

- ``""``: a fresh run. A folder that already holds a run (``checkpoints/last.pt`` or
  ``run.json``) is refused unless ``train.overwrite`` (``--overwrite``), which deletes the old
  checkpoint first; nothing else of the old run is read.
- ``"auto"`` (``--resume``): continue ``OUT/checkpoints/last.pt`` when it exists, else start
  fresh. A path: continue that checkpoint.

A resumed run must have the saved run's config: the checkpoint record's config is compared
with the new one and any difference is refused, naming the keys, except the keys in
:data:`RESUMABLE_KEYS` (run length, phase boundaries, logging and output: any section's
``steps``, ``time_budget``, NerfDiff's ``cdm.start_step`` (when its CDM phase begins: a NeRF
trained for a time budget continues into the CDM phase from the step it reached),
``log_every``, ``eval_every``, ``ckpt_every``, ``progress``, ``vis``, ``tensorboard``, ``resume``,
``overwrite``, ``out_dir``, fit's ``eval_views_max``, ``turntable_frames``, ``chunk``, and the
inference-only sections SSDNeRF's ``recon`` and NerfDiff's ``ngd``).
Temporary files of an interrupted checkpoint save (``.last.pt.*.tmp``) are removed at the start.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from neural3d.methods.registry import Method, use_ema

#: config keys (by their last dotted component) that may differ between a run and its
#: resumption: run length and phase boundaries (a later phase may start at the step a run
#: reached), logging, outputs and inference-only sections; every other difference is refused
RESUMABLE_KEYS = frozenset({
    "steps", "time_budget", "start_step", "log_every", "eval_every", "ckpt_every", "progress",
    "vis", "tensorboard", "resume", "overwrite", "out_dir", "eval_views_max", "turntable_frames",
    "chunk", "recon", "ngd"})


def config_differences(saved: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two config dicts (:func:`neural3d.config.
    to_dict`), :data:`RESUMABLE_KEYS` excluded."""
    if isinstance(saved, dict) and isinstance(new, dict):
        out = []
        for k in list(saved) + [k for k in new if k not in saved]:
            if k in RESUMABLE_KEYS:
                continue
            where = f"{prefix}.{k}" if prefix else str(k)
            if k not in saved or k not in new:
                out.append(where)
            else:
                out += config_differences(saved[k], new[k], where)
        return out
    if isinstance(saved, (list, tuple)) and isinstance(new, (list, tuple)):
        saved, new = list(saved), list(new)
    return [] if saved == new else [prefix or "(config)"]


def _holds_run(out: Path) -> str | None:
    """What in ``out`` shows a previous run (None when nothing does)."""
    for name in ("checkpoints/last.pt", "run.json"):
        if (out / name).is_file():
            return name
    return None


def prepare_run(method: Method, tcfg, rank: int = 0, log=print):
    """Check the run folder before anything is written (see the module docstring); returns
    ``(checkpoint dict, its path)`` to resume from, or ``(None, None)`` for a fresh run.
    Validates the config first (:func:`neural3d.config.validate`). Refusals are
    :class:`~neural3d.config.ConfigError` s naming the folder and the keys; so is a logging
    backend whose package is missing (``vis=wandb`` without wandb)."""
    from neural3d.config import ConfigError, to_dict, validate
    from neural3d.train.checkpoint import load_checkpoint, remove_stale_temp_files
    from neural3d.train.loggers import require_backend

    validate(method.cfg)
    validate(tcfg, "train")
    if rank == 0:
        require_backend(tcfg.log_backend())

    out = Path(tcfg.out_dir)
    last = out / "checkpoints" / "last.pt"
    if rank == 0:
        for tmp in remove_stale_temp_files(last):
            log(f"removed {tmp} (left by an interrupted checkpoint save)")
    r = tcfg.resume
    if not r:
        found = _holds_run(out)
        if found is None:
            return None, None
        if not tcfg.overwrite:
            raise ConfigError(f"{out} already holds a run ({found}): continue it with --resume "
                              "(resume=auto) or replace it with --overwrite (overwrite=true), "
                              "or choose another output folder")
        if rank == 0:
            last.unlink(missing_ok=True)
            log(f"overwriting the run in {out}")
        return None, None
    path = last if r == "auto" else Path(r)
    if r == "auto" and not path.is_file():
        return None, None
    ckpt = load_checkpoint(path, map_location="cpu")
    record = ckpt.get("record") or {}
    name = record.get("method", method.name) if isinstance(record, dict) else None
    if name != method.name:
        raise ConfigError(f"cannot resume from {path}: it is a {name!r} run, not "
                          f"{method.name!r}")
    try:
        saved = to_dict(type(method).config_from_record(record))
    except (ConfigError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"cannot resume from {path}: its recorded config is unreadable "
                          f"({exc})") from exc
    diff = config_differences(saved, to_dict(method.cfg))
    if diff:
        shown = ", ".join(diff[:8]) + (f" (+{len(diff) - 8} more)" if len(diff) > 8 else "")
        raise ConfigError(f"cannot resume from {path}: the config differs in {shown}; resume "
                          f"with the saved config ({out / 'config.yaml'}) or start a fresh run "
                          "(--overwrite or another output folder)")
    return ckpt, path


@contextlib.contextmanager
def eval_module(trainer, name: str = "model") -> Iterator[nn.Module]:
    """The module ``name`` to sample or render with inside :meth:`Method.evaluate`: its EMA copy
    once :func:`~neural3d.methods.registry.use_ema` takes it (as :func:`neural3d.load` would),
    else the trained module, put in eval mode for the duration."""
    ema = trainer.emas.get(name)
    if ema is not None and use_ema("auto", trainer.step, ema.decay):
        yield ema.module
        return
    module = trainer.raw[name]
    was = module.training
    module.eval()
    try:
        yield module
    finally:
        module.train(was)


class TrainingClock:
    """Seconds of training so far: wall time since :meth:`start` minus the time spent in
    :meth:`Method.evaluate` (what time budgets and time-to-quality curves count)."""

    def __init__(self) -> None:
        self.started = time.time()
        self.evaluating = 0.0

    def seconds(self) -> float:
        return time.time() - self.started - self.evaluating


def train_method(method: Method, steps: int | None = None, time_budget: float | None = None,
                 log=print):
    """Train ``method`` with the shared trainer; returns ``(trainer, summary)`` where
    ``summary`` is :meth:`Method.finish`'s dict.

    ``time_budget`` (seconds of training, not counting :meth:`Method.evaluate`, starting after
    the kernel build and the setup; default ``train.time_budget``) ends training early at a step
    boundary, as does :meth:`Method.should_stop`; ``trainer.stopped_early`` then says so. Torch
    is seeded with ``train.seed`` before :meth:`Method.build`."""
    from neural3d.train.distributed import init_distributed

    dist_info = init_distributed()
    try:
        return _train(method, steps, time_budget, log)
    finally:
        if dist_info.started:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(method: Method, steps: int | None, time_budget: float | None, log):
    from neural3d.config import save_config
    from neural3d.render.backend import prepare
    from neural3d.train import Trainer
    from neural3d.train.distributed import world_info

    tcfg = method.train_config()
    time_budget = time_budget if time_budget is not None else (tcfg.time_budget or None)
    rank, _ = world_info()
    ckpt, ckpt_path = prepare_run(method, tcfg, rank, log)
    prepare(method.device)
    out = Path(tcfg.out_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(method.cfg, out / "config.yaml")
    torch.manual_seed(tcfg.seed)  # initial weights follow the run's seed
    built = method.build()
    method.modules = built.modules
    trainer = Trainer(built.modules, built.optimizers, tcfg, scheduler=built.scheduler,
                      record=method.record(), device=method.device, ema=built.ema,
                      manual=built.manual)
    for name, (get, set_) in built.state.items():
        trainer.register_state(name, get, set_)
    if rank == 0:
        log(f"run folder: {out}")
        if trainer.logger is not None:
            log(f"logs: {trainer.logger.how_to_view()}")
    method.setup(trainer)
    if ckpt is not None:
        trainer.resume_from(ckpt, ckpt_path)
        del ckpt
        if rank == 0:
            log(f"resumed from {ckpt_path} at step {trainer.step}")
    clock = method.clock = TrainingClock()

    def evaluate(s: int):
        # evaluation leaves the global RNG as it was: a run logs what it likes, same losses
        t0 = time.time()
        devices = [method.device] if method.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):
                return method.evaluate(trainer, s)
        finally:
            clock.evaluating += time.time() - t0

    def stop(s: int) -> bool:
        return (time_budget is not None and clock.seconds() > time_budget) or \
            method.should_stop(trainer, s)

    trainer.fit(lambda s: method.step(trainer, s), steps=steps, eval_fn=evaluate, stop_fn=stop)
    method.train_seconds = clock.seconds()
    summary: dict[str, Any] = method.finish(trainer) if rank == 0 else {}
    trainer.close()
    return trainer, summary
