"""``neural3d info [--json]``: versions, devices, active backends and integrations."""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("info", help="versions, devices, active kernel backends, optional "
                              "integrations and why an optional one is inactive")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from neural3d.env_info import collect

    info = collect()
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    console.print(f"[bold]neural3d {info['neural3d']}[/bold]  python {info['python']}  "
                  f"torch {info['torch']} (CUDA build {info['torch_cuda_build']})")
    console.print(f"devices: {', '.join(info['devices'])}   cpu threads: {info['cpu_threads']}")
    table = Table(title="optional packages")
    for col in ("package", "active", "version", "for / why not"):
        table.add_column(col)
    for dist, entry in info["optional"].items():
        note = entry["for"] if entry["active"] else f"{entry.get('why', '')}  ({entry['for']})"
        table.add_row(dist, "yes" if entry["active"] else "no", entry.get("version", "-"), note)
    console.print(table)
    for key, value in info.items():
        if isinstance(value, dict) and key != "optional":
            console.print(f"[bold]{key}[/bold]: {json.dumps(value, indent=2)}")
    return 0
