"""The ``neural3d`` command.

Each sub-command lives in its own module under :mod:`neural3d.commands`, which exposes
``register(subparsers)``; this file discovers and assembles them (alphabetically), so adding a
command never touches this file. Modules import their heavy dependencies inside their handlers,
which keeps ``neural3d --help`` fast.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys


def command_modules() -> list[str]:
    """Names of the modules under :mod:`neural3d.commands`, sorted."""
    import neural3d.commands as pkg

    return sorted(f"{pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__)
                  if not m.name.startswith("_"))


def build_parser() -> argparse.ArgumentParser:
    from neural3d import __version__

    parser = argparse.ArgumentParser(
        prog="neural3d",
        description="3D-aware generative models centred on neural rendering.",
    )
    parser.add_argument("--version", action="version", version=f"neural3d {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in command_modules():
        importlib.import_module(name).register(subparsers)
    return parser


def user_errors() -> tuple[type[BaseException], ...]:
    """The library's error types for bad input (a config key, a file, a checkpoint, a method,
    a run folder, a loss that became NaN): reported as one line, exit 2."""
    from neural3d.config import ConfigError
    from neural3d.data.core import DataError
    from neural3d.eval.protocol import EvalError
    from neural3d.export.mesh import MeshError
    from neural3d.methods.registry import MethodError
    from neural3d.train.checkpoint import CheckpointError
    from neural3d.train.trainer import NonFiniteLossError

    return (ConfigError, DataError, EvalError, MethodError, CheckpointError, NonFiniteLossError,
            MeshError, FileNotFoundError)


def main(argv: list[str] | None = None) -> int:
    """Run a command. Bad input (:func:`user_errors`) prints ``neural3d COMMAND: message`` and
    returns 2; Ctrl-C prints one line (training: the step and checkpoint saved) and returns
    130; ``NEURAL3D_DEBUG=1`` shows the traceback instead."""
    import os

    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        if not hasattr(args, "rest"):  # only two-stage commands take the rest of the line
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.rest = extra + args.rest
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return int(args.func(args) or 0)
    except user_errors() as exc:
        if os.environ.get("NEURAL3D_DEBUG"):
            raise
        print(f"neural3d {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:
        if os.environ.get("NEURAL3D_DEBUG"):
            raise
        print(f"neural3d {args.command}: {exc or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
