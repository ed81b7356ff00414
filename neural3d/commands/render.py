"""``neural3d render CKPT --path orbit|spiral --out FILE``: a video of a fitted object."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("render", help="render a camera path (video) from a 'neural3d fit' "
                              "checkpoint")
    p.add_argument("ckpt", help="checkpoint (OUT/checkpoints/last.pt of neural3d fit)")
    p.add_argument("--path", choices=("orbit", "spiral"), default="orbit")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--width", type=int, default=None, help="image width (default: training)")
    p.add_argument("--ema", action="store_true", help="use the EMA weights when saved")
    p.add_argument("--out", required=True, help="output .mp4 (or .gif)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neural3d.methods.fit import load_fit_model, write_turntable

    model, rec = load_fit_model(args.ckpt, ema=args.ema)
    path = write_turntable(Path(args.out), model, rec["camera"], args.frames, kind=args.path,
                           width=args.width)
    print(f"wrote {path} ({args.frames} frames, {args.path})")
    return 0
