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
``trainer.ema.module`` holds the averaged copy). With ``optimizer=None`` the ``step_fn`` does its
own backward/steps (GANs with two optimisers) and the trainer still logs, guards and
checkpoints; a dict of optimisers is also accepted.

Logging: a tqdm progress bar (loss, PSNR when returned, steps/s), TensorBoard scalars under
``OUT/tb`` (``train/*`` every ``log_every`` steps) and images/scalars from ``eval_fn(step)``
(``eval/*``), and ``OUT/run.json`` with config, seed, versions, git commit, world size, status.

Checkpoints (``OUT/checkpoints/last.pt``, every ``ckpt_every`` steps and at the end) are written
atomically (temp file + ``os.replace``) and loaded with ``weights_only=True``. They hold model,
optimisers, scheduler, EMA, GradScaler, step, every named generator, the global torch (and CUDA)
RNG state, the loss history and extra method state (``trainer.register_state``), so a resumed
run continues with exactly the losses of an uninterrupted one (tested). Do not use Python's or
NumPy's global RNGs inside ``step_fn``.

Multi-process: launch with ``torchrun --nproc_per_node N ...`` and call
:func:`init_distributed` first (NCCL on GPUs, gloo on CPUs); the trainer wraps the model in
DDP, averages logged scalars over ranks and writes files on rank 0 only. Generators are the same
on every rank unless ``per_rank=True``: a method can draw the global batch and take its shard
``[rank::world_size]``, which makes N processes equal one process with the combined batch
(tested with 2 gloo processes).
"""

from neural3d.train.checkpoint import load_checkpoint, save_atomic
from neural3d.train.distributed import barrier, init_distributed, is_main, world_info
from neural3d.train.ema import EMA
from neural3d.train.trainer import NonFiniteLossError, TrainConfig, Trainer

__all__ = [
    "EMA",
    "NonFiniteLossError",
    "TrainConfig",
    "Trainer",
    "barrier",
    "init_distributed",
    "is_main",
    "load_checkpoint",
    "save_atomic",
    "world_info",
]
