"""Pieces every command shares: ``--device``/``--threads``, method-dispatching sub-commands
(``neural3d COMMAND METHOD ...`` with help per method) and the config-key listing.

The ``METHOD`` of ``train``/``sample`` is parsed in two stages so that ``neural3d --help`` stays
fast (no method is imported to build the top-level parser): the sub-command takes the method
name and the rest of the line; the rest is then parsed by a parser made for that method
(:func:`method_parser`), which adds the method's own options and prints its help.
"""

from __future__ import annotations

import argparse
import dataclasses


def add_runtime_args(parser: argparse.ArgumentParser) -> None:
    """``--device auto|cpu|cuda[:N]`` and ``--threads N``."""
    parser.add_argument("--device", default="auto",
                        help="auto (CUDA when present, else CPU) | cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=0,
                        help="torch CPU threads (default 0: auto, fewer when the machine is "
                             "busy; 1 is fastest on a shared machine)")


def add_vis_arg(parser: argparse.ArgumentParser) -> None:
    """``--vis tensorboard|wandb|none``: where training logs go (config key ``vis``)."""
    parser.add_argument("--vis", default=None, choices=["tensorboard", "wandb", "none"],
                        help="training logs: tensorboard (OUT/tb, the default), wandb (pip "
                             "install 'neural3d[wandb]'; WANDB_MODE=offline honoured) or none")


def check_options(args: argparse.Namespace, **limits) -> None:
    """Range-check integer/float options (``frames=at_least(1)``, see
    :class:`neural3d.config.Range`): a bad value is a one-line
    :class:`~neural3d.config.ConfigError` naming the option (``--frames: must be >= 1, got 0``).
    Options left at None are not checked."""
    for name, rng in limits.items():
        value = getattr(args, name, None)
        if value is not None:
            rng.check(value, "--" + name.replace("_", "-"))


def setup_runtime(args: argparse.Namespace):
    """Apply ``--threads`` and resolve ``--device``; returns the ``torch.device``."""
    from neural3d.config import at_least
    from neural3d.device import resolve_device

    check_options(args, threads=at_least(0))
    device = resolve_device(args.device)
    if device.type == "cpu":
        choose_threads(args.threads)
    return device


def choose_threads(requested: int = 0) -> int:
    """Set torch's CPU threads: ``requested`` if > 0, else the idle cores (load average
    subtracted, at least 1). On a shared machine, oversubscribed OpenMP threads make every
    step several times slower (measured: 2.1 vs 0.9 steps/s with 1 vs 2 threads at load 3.3
    on 2 cores)."""
    import os

    import torch

    if requested <= 0:
        cores = os.cpu_count() or 1
        try:
            busy = os.getloadavg()[0]
        except OSError:
            busy = 0.0
        requested = max(1, min(torch.get_num_threads(), int(cores - busy + 0.5)))
    torch.set_num_threads(requested)
    return requested


# ----------------------------------------------------------------------------- methods
class _MethodListHelp(argparse.Action):
    """``-h``: the sub-command's help plus the registered methods that can do it (imported
    only now, so that building the top-level parser stays fast)."""

    def __init__(self, option_strings, dest, capability: str = "", **kw):
        self.capability = capability
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kw)

    def __call__(self, parser, namespace, values, option_string=None):
        from neural3d.methods.registry import available_methods

        lines = [f"  {name:<12} {cls.summary}" for name, cls in available_methods().items()
                 if not self.capability or self.capability in cls.capabilities()]
        parser.epilog = ("methods:\n" + "\n".join(lines) + "\n\n`neural3d "
                         f"{parser.prog.split()[-1]} METHOD --help` shows a method's options.")
        parser.print_help()
        parser.exit()


def add_method_command(subparsers, name: str, capability: str, help: str, description: str):
    """A sub-command ``name METHOD [...]``; the rest of the line is left in ``args.rest``."""
    p = subparsers.add_parser(name, help=help, description=description, add_help=False,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-h", "--help", action=_MethodListHelp, capability=capability,
                   help="show this help (with the methods) and exit")
    p.add_argument("method", help="a registered method (`neural3d methods` lists them)")
    p.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return p


def method_parser(command: str, cls, usage_doc: str) -> argparse.ArgumentParser:
    """The parser of ``neural3d COMMAND METHOD``: ``usage_doc`` plus the method's summary and
    capabilities; the caller adds the command's options, then the method adds its own."""
    return argparse.ArgumentParser(
        prog=f"neural3d {command} {cls.name}",
        description=f"{cls.name}: {cls.summary}\ncapabilities: "
                    f"{', '.join(cls.capabilities()) or 'none'}\n\n{usage_doc}",
        formatter_class=argparse.RawDescriptionHelpFormatter)


def _instance_keys(obj, prefix: str) -> list[tuple[str, str]]:
    """``(dotted key, repr of the value)`` for every leaf of a config instance."""
    out: list[tuple[str, str]] = []
    kind = getattr(obj, "kind", None)
    if isinstance(kind, str):  # a member of a tagged union (config.TaggedConfig)
        out.append((f"{prefix}kind", repr(kind)))
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            out += _instance_keys(value, f"{prefix}{f.name}.")
        else:
            out.append((f"{prefix}{f.name}", repr(value)))
    return out


def config_epilog(cls: type) -> str:
    """The config keys and defaults, for a method's ``--help``."""
    keys = _instance_keys(cls(), "")
    width = max(len(k) for k, _ in keys)
    return ("config keys (YAML, or KEY=VALUE overrides; defaults shown):\n"
            + "\n".join(f"  {k:<{width}}  {v}" for k, v in keys))
