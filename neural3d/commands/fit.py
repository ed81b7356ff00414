"""``neural3d fit --data OBJECT_DIR``: fit one object (SRN folder, Blender or nerfstudio scene).

A shortcut for ``neural3d train fit data=OBJECT_DIR out_dir=OUT ...``: the options below set
config keys; any other key goes as ``KEY=VALUE`` (``neural3d train fit --help`` lists them).
A Blender scene trains on ``transforms_train.json`` and is scored on ``transforms_test.json``;
other layouts hold out every 8th view (``eval_every_views``) unless ``--eval-data`` is given.
"""

from __future__ import annotations

import argparse

from neural3d.commands._common import add_runtime_args, add_vis_arg, check_options, setup_runtime


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "fit", help="fit one object or scene (SRN object folder, Blender or nerfstudio scene) "
        "and write metrics.json, renders.png, turntable.mp4 and a checkpoint",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=None, help="object folder or transforms.json (= data=)")
    p.add_argument("--eval-data", default=None, help="held-out views of the same object")
    p.add_argument("--field", default=None, metavar="KIND",
                   help="field kind: triplane, hashgrid, mlp (sets field.kind before the "
                   "overrides; default: the config's, triplane)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 1500)")
    p.add_argument("--res", type=int, default=None, help="resize images to RES x RES")
    p.add_argument("--out", default=None, help="output folder (default runs/fit)")
    p.add_argument("--config", default=None,
                   help="YAML file with fit config keys, or a packaged config by name "
                        "(fit/default)")
    p.add_argument("--resume", action="store_true",
                   help="continue OUT/checkpoints/last.pt (= resume=auto; the config must match "
                        "the saved one except run-length and logging keys)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace the run in OUT (= overwrite=true); without it or --resume, an "
                        "OUT that holds a run is refused")
    p.add_argument("--time-budget", type=float, default=None,
                   help="stop training after this many seconds (at a step boundary; counted "
                        "after the kernel build and the setup)")
    add_runtime_args(p)
    add_vis_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="config overrides, e.g. rays=2048 plane_lr=0.05 field.resolution=96")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neural3d.config import load_config, positive
    from neural3d.methods.fit import Fit, FitConfig
    from neural3d.methods.training import train_method

    flags = {"data": args.data, "eval_data": args.eval_data, "steps": args.steps,
             "res": args.res, "out_dir": args.out,
             "resume": "auto" if args.resume else None,
             "overwrite": True if args.overwrite else None,
             "progress": False if args.quiet else None, "vis": args.vis}
    overrides = ([f"field.kind={args.field}"] if args.field else []) + list(args.overrides)
    overrides += [f"{k}={v}" for k, v in flags.items() if v is not None]
    check_options(args, time_budget=positive())
    cfg = load_config(FitConfig, args.config, overrides)
    device = setup_runtime(args)
    _, metrics = train_method(Fit(cfg, device), time_budget=args.time_budget)
    print_summary(metrics, cfg.out_dir)
    return 0


def print_summary(metrics: dict, out: str) -> None:
    """Held-out metrics, steps and time, backend and device, and the files written."""
    from pathlib import Path

    def fmt(k):
        v = metrics.get(k)
        return "n/a" if v is None else f"{v:.4f}" if k != "psnr" else f"{v:.2f} dB"

    print(f"held-out: PSNR {fmt('psnr')}, SSIM {fmt('ssim')}, LPIPS {fmt('lpips')}"
          + (f" ({metrics['lpips_reason']})" if metrics.get("lpips") is None
             and metrics.get("lpips_reason") else ""))
    print(f"{metrics['steps']} steps in {metrics['train_seconds']:.0f} s of training, field "
          f"{metrics['field']}, compositing backend {metrics.get('backend')} on "
          f"{metrics.get('device')}")
    o = Path(out)
    for name in ("metrics.json", "renders.png"):
        if (o / name).exists():
            print(f"  {o / name}")
    if metrics.get("turntable"):
        print(f"  {metrics['turntable']}")
    print(f"  {metrics['checkpoint']}")
