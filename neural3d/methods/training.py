"""Training any registered method: build, the shared trainer, ``step``, ``finish``.

``train_method(method)`` is what ``neural3d train METHOD`` runs: it starts torch.distributed
when launched by torchrun, builds the compositing kernel before any clock starts, writes the
run folder's ``config.yaml``, builds the method's modules and optimisers, hands them to
:class:`~neural3d.train.Trainer` together with the method's record (so that the checkpoint can
be rebuilt by :func:`neural3d.methods.load`), resumes per ``train.resume`` and runs
``method.step`` until ``train.steps``.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from neural3d.methods.registry import Method


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
    the kernel build and the setup) ends training early at a step boundary, as does
    :meth:`Method.should_stop`; ``trainer.stopped_early`` then says so."""
    from neural3d.train.distributed import init_distributed

    dist_info = init_distributed()
    try:
        return _train(method, steps, time_budget, log)
    finally:
        if dist_info.started:
            import torch.distributed as dist

            dist.destroy_process_group()


def _train(method: Method, steps: int | None, time_budget: float | None, log):
    from neural3d.config import save_config, validate
    from neural3d.render.backend import prepare
    from neural3d.train import Trainer
    from neural3d.train.distributed import world_info

    validate(method.cfg)
    tcfg = method.train_config()
    validate(tcfg, "train")
    rank, _ = world_info()
    prepare(method.device, announce=log if rank == 0 else (lambda *_: None))
    out = Path(tcfg.out_dir)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        save_config(method.cfg, out / "config.yaml")
    built = method.build()
    method.modules = built.modules
    trainer = Trainer(built.modules, built.optimizers, tcfg, scheduler=built.scheduler,
                      record=method.record(), device=method.device, ema=built.ema,
                      manual=built.manual)
    for name, (get, set_) in built.state.items():
        trainer.register_state(name, get, set_)
    method.setup(trainer)
    if trainer.maybe_resume() and rank == 0:
        log(f"resumed from {trainer.ckpt_path} at step {trainer.step}")
    clock = method.clock = TrainingClock()

    def evaluate(s: int):
        t0 = time.time()
        try:
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
