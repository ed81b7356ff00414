"""The shared trainer: one loop every method uses.

Usage (the contract of ``docs/INTERFACES.md``)::

    from neural3d.train import Trainer, TrainConfig

    cfg = TrainConfig(steps=2000, seed=0, out_dir="runs/x", ema_decay=0.999, grad_clip=1.0)
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), 1e-3), cfg,
                      scheduler=None, record=my_method_config_as_dict)
    g = trainer.generator("data")          # seeded, checkpointed torch.Generator

    def step_fn(step: int) -> dict:
        idx = torch.randint(len(data), (64,), generator=g)   # draw batches ONLY from g
        loss = loss_fn(trainer.model(data[idx]))              # trainer.model: DDP-wrapped
        return {"loss": loss, "psnr": ...}                    # scalars; "loss" is required

    trainer.maybe_resume()                  # cfg.resume="auto": OUT/checkpoints/last.pt
    history = trainer.fit(step_fn, eval_fn=None)   # list of dicts of floats, one per step

What the trainer does around ``step_fn``: ``zero_grad`` → ``step_fn(step)`` (under autocast on
CUDA when ``cfg.amp``) → NaN/inf guard (raises :class:`NonFiniteLossError` naming the step and the
last good checkpoint, which it never overwrites) → ``backward`` (GradScaler for fp16) → gradient
clipping (``cfg.grad_clip``) → optimiser and scheduler step → EMA (``cfg.ema_decay``;
``trainer.ema.module`` holds the averaged copy). A dict of optimisers is also accepted (one
backward, one global clip, every optimiser steps).

Several named modules and manual mode (GANs)::

    trainer = Trainer({"G": G, "D": D}, {"G": opt_g, "D": opt_d}, cfg,
                      scheduler={"G": sched_g}, ema={"G": 0.999}, manual=True)

    def step_fn(step):
        fake = trainer.modules["G"](z)                       # DDP-wrapped under torchrun
        loss_d = d_loss(trainer.modules["D"], real, fake.detach())
        trainer.backward_step(loss_d, "D")                   # guard, backward, clip, step D
        loss_g = g_loss(trainer.modules["D"], fake)
        trainer.backward_step(loss_g, "G")
        return {"loss": (loss_d + loss_g).detach(), "loss_d": loss_d.detach()}

Each module gets its own DDP wrapper (``trainer.modules[name]``; unwrapped in
``trainer.raw[name]``) and optionally its own EMA (``trainer.emas[name]``). In manual mode
``backward_step(loss, name)`` does, for that optimiser only: NaN/inf guard on ``loss`` → zero its
gradients → backward outside autocast (GradScaler for fp16) → clip its parameters' gradient norm
→ step (returns the norm before clipping); it may be called several times per step. After
``step_fn`` the scheduler of every optimiser that stepped steps once, and the EMAs update. The
single-model form ``Trainer(model, optimizer, cfg)`` is the module named ``"model"``
(``trainer.model``, ``trainer.module``, ``trainer.ema``); ``optimizer=None`` is the old manual
mode in which ``step_fn`` steps optimisers the trainer neither owns nor checkpoints.

Logging: a tqdm progress bar (loss, PSNR when returned, steps/s), scalars (``train/*`` every
``log_every`` steps) and images/scalars from ``eval_fn(step)`` (``eval/*``) through
``trainer.logger`` (``cfg.vis``: TensorBoard under ``OUT/tb``, wandb under ``OUT/wandb``, or
none; :mod:`neural3d.train.loggers`), and ``OUT/run.json`` with config, seed, versions, git
commit, world size, status.

Checkpoints (``OUT/checkpoints/last.pt``, every ``ckpt_every`` steps and at the end) are written
atomically (temp file + ``os.replace``) and loaded with ``weights_only=True``. Format
``"neural3d-trainer-2"``: ``modules`` {name: state_dict}, ``optimizers`` {name: state},
``schedulers`` {optimiser name: state}, ``emas`` {module name: {"decay", "module"}}, ``scaler``,
``step``, ``generators`` (every named generator), ``torch_rng``/``cuda_rng`` (global RNG states),
``history``, ``train_config``, ``record``, ``extra`` (``trainer.register_state``); ``model`` and
``ema`` alias ``modules["model"]`` and ``emas["model"]`` (stored once; None without a module
named ``"model"``), the keys format 1 had and other code reads. Format-1 files still resume. A
resumed run continues with exactly the losses of an uninterrupted one, in manual mode too
(tested). Do not use Python's or NumPy's global RNGs inside ``step_fn``.

Multi-process: launch with ``torchrun --nproc_per_node N ...`` and call :func:`init_distributed`
first (NCCL on GPUs, gloo on CPUs; it returns ``DistInfo`` whose ``started`` says whether to
destroy the group at the end); the trainer wraps each module in DDP, averages logged scalars over
ranks and writes files on rank 0 only. Generators are the same on every rank unless
``per_rank=True``: a method can draw the global batch and take its shard ``[rank::world_size]``,
which makes N processes equal one process with the combined batch (tested with 2 gloo processes,
one model and a G/D pair in manual mode). Under DDP, do not toggle ``requires_grad`` of a wrapped
module between steps (DDP expects the same trainable parameters every backward).
"""

from neural3d.train.checkpoint import CheckpointError, load_checkpoint, save_atomic
from neural3d.train.distributed import DistInfo, barrier, init_distributed, is_main, world_info
from neural3d.train.ema import EMA
from neural3d.train.loggers import VIS_BACKENDS, Logger, make_logger
from neural3d.train.trainer import NonFiniteLossError, TrainConfig, Trainer, TrainingInterrupted

__all__ = [
    "CheckpointError",
    "DistInfo",
    "EMA",
    "Logger",
    "NonFiniteLossError",
    "TrainConfig",
    "Trainer",
    "TrainingInterrupted",
    "VIS_BACKENDS",
    "barrier",
    "init_distributed",
    "is_main",
    "load_checkpoint",
    "make_logger",
    "save_atomic",
    "world_info",
]
