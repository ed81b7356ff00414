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

    return sorted(f"{pkg.__name__}.{m.name}" for m in pkgutil.iter_modules(pkg.__path__))


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


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
