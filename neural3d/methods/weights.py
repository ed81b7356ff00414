"""Inference weights as safetensors: ``neural3d export CKPT --format safetensors``.

An export folder holds two files::

    DIR/model.safetensors   every module's state dict ("<module>.<key>", e.g. "model.unet.
                            input.0.weight", "G.mapping.fc0.weight") and the method's other
                            inference tensors ("tensors.<name>", e.g. SSDNeRF's mean latent)
    DIR/config.json         the method record (method, config, format_version and what the
                            method adds, e.g. a fit's scene geometry) + "export": {format,
                            step, ema (the modules whose EMA copy was taken), source}

The weights are the ones :func:`neural3d.load` uses (``ema="auto"``: the EMA copy once it has
warmed up); no optimiser, scheduler, RNG or trainer state. :func:`neural3d.load` reads ``DIR``
or ``DIR/model.safetensors`` back (:func:`read_export`) into the same method instance.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

#: the ``export.format`` of config.json
EXPORT_FORMAT = "neural3d-safetensors-1"
WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
_TENSORS = "tensors"


def is_export(path: str | Path) -> bool:
    """True for a ``.safetensors`` file or a folder holding ``model.safetensors`` or
    ``config.json`` (an export; :func:`read_export` names a missing half)."""
    p = Path(path)
    return p.suffix == ".safetensors" or (p.is_dir() and any(
        (p / f).exists() for f in (WEIGHTS_FILE, CONFIG_FILE)))


def write_export(method, out: str | Path, ema_modules: list[str], source: str | None = None
                 ) -> list[Path]:
    """Write ``method``'s modules (as loaded: the weights it renders with) and
    :meth:`~neural3d.methods.registry.Method.inference_tensors` to ``out/model.safetensors``,
    its record to ``out/config.json``. Returns the two paths."""
    from safetensors.torch import save_file

    flat: dict[str, torch.Tensor] = {}
    for name, module in method.modules.items():
        if "." in name or name == _TENSORS:
            raise ValueError(f"module name {name!r} cannot be exported (no '.', not "
                             f"{_TENSORS!r})")
        for key, t in module.state_dict().items():
            flat[f"{name}.{key}"] = t.detach().cpu().contiguous().clone()
    for key, t in method.inference_tensors().items():
        flat[f"{_TENSORS}.{key}"] = t.detach().cpu().contiguous().clone()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record = dict(method.record())
    record["export"] = {"format": EXPORT_FORMAT, "step": int(method.checkpoint_step),
                        "ema": sorted(ema_modules), "source": source}
    weights, config = out / WEIGHTS_FILE, out / CONFIG_FILE
    save_file(flat, str(weights), metadata={"format": EXPORT_FORMAT, "method": method.name})
    config.write_text(json.dumps(record, indent=2) + "\n")
    return [weights, config]


def read_export(path: str | Path) -> dict[str, Any]:
    """An export folder (or its ``model.safetensors``; ``config.json`` beside it) as a
    checkpoint-like mapping ``{"record", "modules": {name: state dict}, "tensors", "step",
    "export"}`` (``export``: config.json's export section)
    that :meth:`~neural3d.methods.registry.Method.from_checkpoint` takes. Errors are
    :class:`~neural3d.train.checkpoint.CheckpointError` naming the file."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from neural3d.train.checkpoint import CheckpointError

    p = Path(path)
    folder = p if p.is_dir() else p.parent
    weights = p if p.suffix == ".safetensors" else folder / WEIGHTS_FILE
    config = folder / CONFIG_FILE
    for f in (weights, config):
        if not f.is_file():
            raise FileNotFoundError(f"exported model file not found: {f}")
    try:
        record = json.loads(config.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{config}: cannot read the exported record ({exc})") from exc
    info = record.pop("export", None) if isinstance(record, dict) else None
    if not isinstance(info, Mapping) or info.get("format") != EXPORT_FORMAT:
        raise CheckpointError(f"{config}: not a neural3d export (expected "
                              f"export.format {EXPORT_FORMAT!r})")
    try:
        flat = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{weights}: cannot read safetensors ({exc})") from exc
    modules: dict[str, dict[str, torch.Tensor]] = {}
    tensors: dict[str, torch.Tensor] = {}
    for key, t in flat.items():
        name, _, rest = key.partition(".")
        if not rest:
            raise CheckpointError(f"{weights}: tensor {key!r} names no module")
        if name == _TENSORS:
            tensors[rest] = t
        else:
            modules.setdefault(name, {})[rest] = t
    return {"record": record, "modules": modules, "tensors": tensors,
            "step": int(info.get("step", 0)), "export": dict(info)}
