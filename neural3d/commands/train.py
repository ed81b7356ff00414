"""``neural3d train METHOD [--config FILE] [KEY=VALUE ...]``: train a registered method.

Dotted overrides follow the method's config tree (``neural3d train METHOD --help`` lists every
key with its default), e.g. ``train.steps=200 optim.mode=two_stage``. Options may stand before
or after the overrides. ``--vis tensorboard|wandb|none`` chooses where the training logs go
(= ``train.vis``); the run folder and how to view the logs are printed at the start.
Multi-process training: ``torchrun --nproc_per_node N -m neural3d.cli train ...`` (gloo on
CPUs, NCCL on GPUs).
"""

from __future__ import annotations

import argparse
import dataclasses

from neural3d.commands._common import (
    add_method_command,
    add_runtime_args,
    add_vis_arg,
    config_epilog,
    method_parser,
    setup_runtime,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_method_command(subparsers, "train", "train", "train a registered method",
                           __doc__)
    p.set_defaults(func=run)


def parse(method: str, rest: list[str]):
    """``(method class, options)`` of ``neural3d train METHOD REST...``."""
    from neural3d.methods.registry import get_method

    cls = get_method(method, "train")
    p = method_parser("train", cls, __doc__)
    p.epilog = config_epilog(cls.Config)
    p.add_argument("--config", default=None, help="YAML config file, or a packaged config by name "
                   "(e.g. ssdnerf_toycars: see configs/)")
    add_runtime_args(p)
    add_vis_arg(p)
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="dotted config overrides")
    cls.add_arguments("train", p)
    return cls, p.parse_intermixed_args(rest)


def run(args: argparse.Namespace) -> int:
    from neural3d.config import load_config
    from neural3d.methods.training import train_method

    cls, opts = parse(args.method, args.rest)
    overrides = list(opts.overrides)
    if opts.vis is not None:  # train.vis, or vis for a flat config (fit)
        flat = "train" not in {f.name for f in dataclasses.fields(cls.Config)}
        overrides.append(f"{'' if flat else 'train.'}vis={opts.vis}")
    cfg = load_config(cls.Config, opts.config, overrides)
    device = setup_runtime(opts)
    extra = {k: v for k, v in vars(opts).items()
             if k not in ("config", "device", "threads", "overrides", "vis")}
    trainer, summary = train_method(cls(cfg, device, **extra))
    if trainer.rank == 0:
        print(f"checkpoint: {trainer.ckpt_path}")
        print("final: " + ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                    for k, v in summary.items()))
    return 0
