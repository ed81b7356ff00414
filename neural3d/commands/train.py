"""``neural3d train METHOD --config FILE [key=value ...]``: train a generative method.

Methods: ``ssdnerf`` (configs/ssdnerf_*.yaml). Dotted overrides follow the config tree, e.g.
``train.steps=200 optim.mode=two_stage optim.stage1_steps=1500``. Multi-process training: launch
with ``torchrun --nproc_per_node N -m neural3d.cli train ...`` (gloo on CPU, NCCL on GPUs).
"""

from __future__ import annotations

import argparse

TRAINABLE = {"ssdnerf": "SSDNeRF (single-stage diffusion NeRF)"}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("train", help="train a generative method (ssdnerf)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("method", help=f"one of: {', '.join(TRAINABLE)}")
    p.add_argument("--config", help="YAML config (configs/ssdnerf_toycars.yaml, ...)")
    p.add_argument("overrides", nargs=argparse.REMAINDER,
                   help="dotted overrides key.sub=value (options may follow them)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0 = torch default; 1 is fastest on a busy machine)")
    p.add_argument("--device", default=None, help="cpu | cuda (default: cuda if available)")
    p.set_defaults(func=run)


def _init_distributed() -> bool:
    import os

    import torch
    import torch.distributed as dist

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        return False
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend)
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return True


def run(args: argparse.Namespace) -> int:
    import sys

    if args.method not in TRAINABLE:
        print(f"neural3d train: unknown method {args.method!r} (available: "
              f"{', '.join(TRAINABLE)})", file=sys.stderr)
        return 2
    # argparse cannot interleave options with a trailing positional list: options that follow
    # the overrides arrive in the remainder and are parsed here
    again = argparse.ArgumentParser(prog="neural3d train", add_help=False)
    again.add_argument("--config", default=args.config)
    again.add_argument("--threads", type=int, default=args.threads)
    again.add_argument("--device", default=args.device)
    ns, rest = again.parse_known_args(args.overrides or [])
    bad = [r for r in rest if r.startswith("-") or "=" not in r]
    if bad:
        print(f"neural3d train: unrecognised arguments {bad} (overrides look like "
              "key.sub=value)", file=sys.stderr)
        return 2
    args.config, args.threads, args.device, args.overrides = (ns.config, ns.threads, ns.device,
                                                               rest)
    import torch

    from neural3d.config import ConfigError, load_config, save_config

    if args.threads:
        torch.set_num_threads(args.threads)
    from neural3d.methods.ssdnerf import SSDNeRFConfig, train

    try:
        cfg = load_config(SSDNeRFConfig, args.config, args.overrides)
    except (ConfigError, ValueError) as exc:
        print(f"neural3d train: {exc}", file=sys.stderr)
        return 2
    dist_started = _init_distributed()
    try:
        from pathlib import Path

        Path(cfg.train.out_dir).mkdir(parents=True, exist_ok=True)
        save_config(cfg, Path(cfg.train.out_dir) / "config.yaml")
        trainer = train(cfg, device=args.device)
        if trainer.rank == 0:
            last = trainer.history[-1] if trainer.history else {}
            print(f"checkpoint: {trainer.ckpt_path}")
            print("final: " + ", ".join(f"{k}={v:.4g}" for k, v in last.items() if k != "step"))
    finally:
        if dist_started:
            import torch.distributed as dist

            dist.destroy_process_group()
    return 0
