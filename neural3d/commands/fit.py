"""``neural3d fit --data OBJECT_DIR``: fit one object (SRN folder, Blender or nerfstudio scene)."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fit", help="fit one object or scene (SRN object folder, Blender or nerfstudio scene) "
        "and write metrics.json, renders.png, turntable.mp4 and a checkpoint")
    p.add_argument("--data", required=True, help="object folder or transforms.json")
    p.add_argument("--eval-data", default=None,
                   help="held-out views of the same object (default: every 8th view of --data)")
    p.add_argument("--field", default=None, metavar="KIND",
                   help="field kind: triplane, hashgrid, mlp (sets field.kind before the "
                   "overrides; default: the config's, triplane)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 1500)")
    p.add_argument("--res", type=int, default=None, help="resize images to RES x RES")
    p.add_argument("--out", default="runs/fit", help="output folder (default runs/fit)")
    p.add_argument("--config", default=None, help="YAML file with FitConfig keys")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.pt")
    p.add_argument("--time-budget", type=float, default=None,
                   help="stop training after this many seconds (at a step boundary)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default 0: auto, fewer when the machine is busy)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="FitConfig overrides, e.g. rays=2048 plane_lr=0.05")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neural3d.config import load_config
    from neural3d.data import read_object
    from neural3d.methods.fit import FitConfig, fit_object, split_views

    overrides = ([f"field.kind={args.field}"] if args.field else []) + list(args.overrides)
    if args.steps is not None:
        overrides.append(f"steps={args.steps}")
    cfg = load_config(FitConfig, args.config, overrides)
    choose_threads(args.threads)
    data = read_object(args.data, resolution=args.res)
    if args.eval_data:
        train, held = data, read_object(args.eval_data, resolution=args.res)
        held_note = f"{len(held)} views from {args.eval_data}"
    else:
        train, held = split_views(data, cfg.eval_every_views)
        n_held = 0 if held is None else len(held)
        held_note = f"every {cfg.eval_every_views}th view held out ({n_held})"
    print(f"fit: {data.object_id}: {len(train)} training views at "
          f"{train.images.shape[2]}x{train.images.shape[1]}, {held_note}; field {cfg.field.kind}, "
          f"{cfg.steps} steps -> {args.out}")
    _announce_kernel()
    metrics = fit_object(train, held, cfg, args.out, resume="auto" if args.resume else "",
                         progress=not args.quiet, time_budget=args.time_budget)
    print_summary(metrics, args.out)
    return 0


def choose_threads(requested: int = 0) -> int:
    """Set torch's CPU threads: ``requested`` if > 0, else the idle cores (load average
    subtracted, at least 1). On a shared machine, oversubscribed OpenMP threads make every
    step several times slower (measured: 2.1 vs 0.9 steps/s with 1 vs 2 threads at load 3.3
    on 2 cores)."""
    import os

    import torch

    if requested <= 0:
        cores = os.cpu_count() or 1
        try:
            busy = os.getloadavg()[0]
        except OSError:
            busy = 0.0
        requested = max(1, min(torch.get_num_threads(), int(cores - busy + 0.5)))
    torch.set_num_threads(requested)
    return requested


def _announce_kernel() -> None:
    import os

    import torch

    from neural3d.render import build

    forced = os.environ.get("NEURAL3D_BACKEND", "").lower()
    if forced != "torch" and not torch.cuda.is_available() and not build.is_built("cpu"):
        print("compiling the C++ compositing kernel on first use (about 40 s, once; "
              "NEURAL3D_BACKEND=torch skips it)...", flush=True)


def print_summary(metrics: dict, out: str) -> None:
    from pathlib import Path

    def fmt(k):
        v = metrics.get(k)
        return "n/a" if v is None else f"{v:.4f}" if k != "psnr" else f"{v:.2f} dB"

    print(f"held-out: PSNR {fmt('psnr')}, SSIM {fmt('ssim')}, LPIPS {fmt('lpips')}"
          + (f" ({metrics['lpips_reason']})" if metrics.get("lpips") is None
             and metrics.get("lpips_reason") else ""))
    print(f"{metrics['steps']} steps in {metrics['train_seconds']:.0f} s of training "
          f"({metrics['seconds']:.0f} s in all), field {metrics['field']}, compositing backend "
          f"{metrics.get('backend')}")
    o = Path(out)
    for name in ("metrics.json", "renders.png"):
        if (o / name).exists():
            print(f"  {o / name}")
    if metrics.get("turntable"):
        print(f"  {metrics['turntable']}")
    print(f"  {metrics['checkpoint']}")
