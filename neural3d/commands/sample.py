"""``neural3d sample METHOD CKPT --num N --out DIR``: draw samples from a trained model and
write what people look at (grids, turntables); prints every path written.

``neural3d sample METHOD --help`` lists the method's own options (sampler, steps, guidance...).
"""

from __future__ import annotations

import argparse

from neural3d.commands._common import (
    add_method_command,
    add_runtime_args,
    check_options,
    method_parser,
    setup_runtime,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_method_command(subparsers, "sample", "sample",
                           "sample from a trained generative model", __doc__)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neural3d.config import Range, at_least, between, positive
    from neural3d.methods.registry import get_method, load

    cls = get_method(args.method, "sample")
    p = method_parser("sample", cls, __doc__)
    p.add_argument("ckpt", help="checkpoint (RUN/checkpoints/last.pt)")
    p.add_argument("--num", type=int, default=8, help="samples (per class for 2D models)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-ema", action="store_true",
                   help="raw weights (default: the EMA copy once it has warmed up)")
    add_runtime_args(p)
    cls.add_arguments("sample", p)
    ns = p.parse_intermixed_args(args.rest)
    # the command's numbers and the usual ones of methods' sample options
    check_options(ns, num=at_least(1), frames=at_least(1), res=at_least(0), steps=at_least(1),
                  fps=at_least(1), radius=positive(), elevation=between(-90, 90),
                  cfg=Range(), eta=at_least(0))
    opts = vars(ns)
    device = setup_runtime(ns)
    method = load(opts.pop("ckpt"), device, ema=False if opts.pop("no_ema") else "auto",
                  method=cls.name)
    out = Path(opts.pop("out"))
    out.mkdir(parents=True, exist_ok=True)
    for k in ("device", "threads"):
        opts.pop(k)
    for path in method.write_samples(out, opts.pop("num"), opts.pop("seed"), **opts):
        print(path)
    return 0
