"""``neural3d export CKPT [--format ply|obj|glb|safetensors] [--out PATH]``: a trained model's
meshes or inference weights. ``export-mesh`` is the same command.

* ``ply``, ``obj``, ``glb``: a marching-cubes mesh with vertex colours from the method's
  ``export`` capability: the fitted scene (``fit``), or sample ``--sample-index I`` drawn with
  ``--seed S`` (``ssdnerf``, ``stylenerf``: the I-th of ``neural3d sample --num I+1 --seed S``,
  the same mesh every time). ``--resolution`` sets the density grid, ``--level`` the iso-level.
  The format defaults to the suffix of ``--out`` (else ``ply``).
* ``safetensors``: ``OUT/model.safetensors`` + ``OUT/config.json`` (the method record), the
  weights :func:`neural3d.load` uses (EMA once warmed up), no optimiser state; any method;
  ``neural3d.load(OUT)`` reads it back.

``--out`` defaults to ``RUN/export/`` (``RUN/checkpoints/last.pt`` -> ``RUN``).
"""

from __future__ import annotations

import argparse

from neural3d.commands._common import add_runtime_args, check_options, setup_runtime

FORMATS = ("ply", "obj", "glb", "safetensors")


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export", aliases=["export-mesh"],
                              help="export a trained model: a coloured mesh (ply, obj, glb) "
                                   "or inference weights (safetensors)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt", help="checkpoint (RUN/checkpoints/last.pt) or an exported folder")
    p.add_argument("--format", default=None, metavar="FORMAT",
                   help=f"{', '.join(FORMATS)} (default: the suffix of --out, else ply)")
    p.add_argument("--out", default=None,
                   help="mesh file, or the folder of a safetensors export (default RUN/export)")
    p.add_argument("--sample-index", type=int, default=0,
                   help="which sample to mesh (generative methods; default 0)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--resolution", "--res", dest="res", type=int, default=128,
                   help="density grid resolution (128)")
    p.add_argument("--level", type=float, default=None,
                   help="density iso-level (default: half opacity over one grid cell)")
    add_runtime_args(p)
    p.set_defaults(func=run)


def output_path(args: argparse.Namespace, generative: bool):
    """``(format, path)`` from ``--format``/``--out`` (checked: one-line errors)."""
    from pathlib import Path

    from neural3d.config import ConfigError

    out = Path(args.out) if args.out is not None else None
    fmt = args.format
    if fmt is None:
        suffix = out.suffix.lower().lstrip(".") if out is not None else ""
        fmt = suffix if suffix in FORMATS else "ply"
    if fmt not in FORMATS:
        raise ConfigError(f"--format: unknown format {fmt!r} (choose from {', '.join(FORMATS)})")
    if out is None:
        ckpt = Path(args.ckpt)
        out = ckpt if ckpt.is_dir() else (
            ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent) / "export"
        if fmt == "safetensors":
            return fmt, out
        name = f"sample_{args.sample_index:03d}_seed{args.seed}" if generative else "mesh"
        return fmt, out / f"{name}.{fmt}"
    if fmt == "safetensors":
        if out.suffix:
            raise ConfigError(f"--out: a safetensors export is a folder (model.safetensors + "
                              f"config.json), got {str(out)!r}")
        return fmt, out
    if not out.suffix:
        return fmt, out.with_name(f"{out.name}.{fmt}")
    if out.suffix.lower() != f".{fmt}":
        raise ConfigError(f"--out: {str(out)!r} does not end in .{fmt} (--format {fmt})")
    return fmt, out


def run(args: argparse.Namespace) -> int:
    from neural3d.config import at_least, between
    from neural3d.methods.registry import ema_modules, get_method, rebuild
    from neural3d.methods.weights import is_export, read_export, write_export
    from neural3d.train.checkpoint import load_checkpoint

    check_options(args, res=between(2, 2048), sample_index=at_least(0))
    device = setup_runtime(args)
    is_exp = is_export(args.ckpt)
    ckpt = read_export(args.ckpt) if is_exp else load_checkpoint(args.ckpt, map_location="cpu")
    method = rebuild(ckpt, args.ckpt, device)
    fmt, out = output_path(args, "sample" in type(method).capabilities())
    if fmt == "safetensors":
        ema = ckpt["export"]["ema"] if is_exp else ema_modules(ckpt)
        paths = write_export(method, out, ema, source=str(args.ckpt))
    else:
        get_method(method.name, "export")
        paths = method.export(out, res=args.res, level=args.level,
                              sample_index=args.sample_index, seed=args.seed)
    for path in paths:
        print(f"wrote {path}")
    return 0
