"""``neural3d export CKPT --out FILE``: what the checkpoint's method exports (``fit``: a
marching-cubes mesh with vertex colours, PLY). ``export-mesh`` is the same command."""

from __future__ import annotations

import argparse

from neural3d.commands._common import add_runtime_args, check_options, setup_runtime


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", aliases=["export-mesh"],
                              help="export a trained model (fit: coloured PLY mesh)",
                              description=__doc__)
    p.add_argument("ckpt", help="checkpoint (OUT/checkpoints/last.pt)")
    p.add_argument("--out", required=True, help="output file (.ply)")
    p.add_argument("--res", type=int, default=128, help="density grid resolution (128)")
    p.add_argument("--level", type=float, default=None,
                   help="density iso-level (default: half opacity over one grid cell)")
    add_runtime_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neural3d.config import between
    from neural3d.methods.registry import get_method, load

    check_options(args, res=between(2, 2048))
    device = setup_runtime(args)
    method = load(args.ckpt, device)
    get_method(method.name, "export")
    for path in method.export(Path(args.out), res=args.res, level=args.level):
        print(f"wrote {path}")
    return 0
