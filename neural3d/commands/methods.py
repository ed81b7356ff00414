"""``neural3d methods``: the registered methods with their capabilities."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("methods", help="list the registered methods (built-in and "
                              "plugins) with what each can do")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neural3d.methods.registry import available_methods

    methods = available_methods()
    width = max(len(n) for n in methods)
    for name, cls in methods.items():
        caps = ", ".join(cls.capabilities())
        print(f"{name:<{width}}  {cls.summary}\n{'':<{width}}  can: {caps}   "
              f"({cls.__module__}.{cls.__qualname__})")
    return 0
