"""``neural3d render CKPT --path orbit|spiral --out FILE``: a video of a fitted scene along a
camera path (methods that hold one scene and a ``camera_path``: ``fit``)."""

from __future__ import annotations

import argparse

from neural3d.commands._common import add_runtime_args, check_options, setup_runtime


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("render", help="render a camera path (video) of a fitted scene",
                              description=__doc__)
    p.add_argument("ckpt", help="checkpoint (OUT/checkpoints/last.pt of neural3d fit)")
    p.add_argument("--path", choices=("orbit", "spiral"), default="orbit")
    p.add_argument("--frames", type=int, default=60)
    p.add_argument("--width", type=int, default=None, help="image width (default: training)")
    p.add_argument("--no-ema", action="store_true",
                   help="raw weights (default: the EMA copy once it has warmed up)")
    p.add_argument("--out", required=True, help="output .mp4 (or .gif)")
    add_runtime_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neural3d.config import at_least
    from neural3d.export.media import write_video
    from neural3d.methods.registry import MethodError, get_method, load

    check_options(args, frames=at_least(1), width=at_least(1))
    device = setup_runtime(args)
    method = load(args.ckpt, device, ema=False if args.no_ema else "auto")
    get_method(method.name, "render")
    if not hasattr(method, "camera_path"):
        raise MethodError(f"method {method.name!r} holds no single scene to fly around")
    frames = method.render(None, method.camera_path(args.path, args.frames, args.width))
    path = write_video(Path(args.out), frames)
    print(f"wrote {path} ({args.frames} frames, {args.path})")
    return 0
