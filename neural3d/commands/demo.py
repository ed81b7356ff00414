"""``neural3d demo [--out OUT]``: make a toy car, fit it, evaluate held-out views."""

from __future__ import annotations

import argparse

from neural3d.commands._common import add_runtime_args, add_vis_arg, check_options, setup_runtime

DEFAULT_OUT = "runs/demo"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("demo", help="make one toy car, fit a triplane to it and evaluate "
                              "held-out views (a few minutes on 2 CPU cores)")
    p.add_argument("--out", default=None,
                   help=f"output folder (default {DEFAULT_OUT}, replaced on every run; another "
                        "folder that holds a run is refused unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 800)")
    p.add_argument("--time-budget", type=float, default=150.0,
                   help="cap on training seconds (default 150; the clock starts after the "
                        "kernel build and the setup)")
    p.add_argument("--res", type=int, default=64, help="image size (64)")
    p.add_argument("--supersample", type=int, default=4,
                   help="anti-aliasing of the toy renders: s x s rays per pixel, averaged "
                        "(default 4, as real renders are; 1 = aliased point samples)")
    add_runtime_args(p)
    add_vis_arg(p)
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time
    from pathlib import Path

    import torch

    from neural3d.commands.fit import print_summary
    from neural3d.config import at_least, between, positive
    from neural3d.data.toy import write_toy_dataset
    from neural3d.methods.fit import Fit, FitConfig
    from neural3d.methods.training import prepare_run, train_method

    t0 = time.time()
    check_options(args, steps=at_least(1), time_budget=positive(), res=between(8, 4096),
                  supersample=between(1, 16))
    device = setup_runtime(args)
    out = Path(args.out or DEFAULT_OUT)
    data_dir = out / "data"
    # the default folder is the demo's own: running `make demo` again replaces it
    cfg = FitConfig(data=str(data_dir / "cars_train" / "car_train_00000"), out_dir=str(out),
                    steps=800 if args.steps is None else args.steps, progress=not args.quiet,
                    overwrite=args.overwrite or args.out is None, vis=args.vis or "tensorboard")
    method = Fit(cfg, device)
    prepare_run(method, method.train_config())  # refuse a folder of another run before writing
    print(f"demo: writing one procedural toy car, 50 views at {args.res}x{args.res} "
          f"({args.supersample}x{args.supersample} supersampled, SRN layout) to {data_dir}",
          flush=True)
    write_toy_dataset(data_dir, "cars", objects=1, views=50, test_views=0, res=args.res,
                      seed=0, progress=False, supersample=args.supersample)
    print(f"demo: fitting a triplane field on {device} ({torch.get_num_threads()} CPU threads), "
          "holding out every 8th view", flush=True)
    _, metrics = train_method(method, time_budget=args.time_budget)
    print_summary(metrics, str(out))
    print(f"demo: done in {time.time() - t0:.0f} s. Next: neural3d render "
          f"{out / 'checkpoints' / 'last.pt'} --path spiral --out {out / 'spiral.mp4'}")
    return 0
