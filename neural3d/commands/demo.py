"""``neural3d demo [--out OUT]``: make a toy car, fit it, evaluate held-out views."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="make one toy car, fit a triplane to it and evaluate "
                              "held-out views (a few minutes on 2 CPU cores)")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 800)")
    p.add_argument("--time-budget", type=float, default=150.0,
                   help="cap on training seconds (default 150)")
    p.add_argument("--res", type=int, default=64, help="image size (64)")
    p.add_argument("--supersample", type=int, default=4,
                   help="anti-aliasing of the toy renders: s x s rays per pixel, averaged "
                        "(default 4, as real renders are; 1 = aliased point samples)")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (default 0: auto, fewer when the machine is busy)")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import torch

    from neural3d.commands.fit import _announce_kernel, choose_threads, print_summary
    from neural3d.data import read_object
    from neural3d.data.toy import write_toy_dataset
    from neural3d.methods.fit import FitConfig, fit_object, split_views

    t0 = time.time()
    choose_threads(args.threads)
    out = Path(args.out)
    data_dir = out / "data"
    print(f"demo: writing one procedural toy car, 50 views at {args.res}x{args.res} "
          f"({args.supersample}x{args.supersample} supersampled, SRN layout) to {data_dir}",
          flush=True)
    write_toy_dataset(data_dir, "cars", objects=1, views=50, test_views=0, res=args.res,
                      seed=0, progress=False, supersample=args.supersample)
    obj = read_object(data_dir / "cars_train" / "car_train_00000")
    train, held = split_views(obj, 8)
    cfg = FitConfig(steps=args.steps or 800)
    print(f"demo: fitting a triplane field to {len(train)} views, holding out {len(held)} "
          f"(every 8th); {torch.get_num_threads()} CPU threads", flush=True)
    _announce_kernel()
    metrics = fit_object(train, held, cfg, out, progress=not args.quiet,
                         time_budget=args.time_budget)
    print_summary(metrics, str(out))
    print(f"demo: done in {time.time() - t0:.0f} s. Next: neural3d render "
          f"{out / 'checkpoints' / 'last.pt'} --path spiral --out {out / 'spiral.mp4'}")
    return 0
