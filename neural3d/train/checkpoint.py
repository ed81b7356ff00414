"""Atomic checkpoint writing and safe loading."""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import Any

import torch


class CheckpointError(ValueError):
    """A checkpoint that cannot be read, is not neural3d's, or does not fit the run or the
    method loading it; or one that cannot be written (disk full). The message names the file."""


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temporary file in the same folder (``.NAME.*.tmp``), then
    ``os.replace``: a crash mid-write never leaves a truncated checkpoint at ``path``. A full
    disk raises :class:`CheckpointError` ("no space left on device", naming ``path``); the
    previous checkpoint at ``path`` is untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointError(f"{path}: no space left on device while writing the "
                                  "checkpoint (the previous one is kept)") from exc
        if isinstance(exc, RuntimeError) and "No space left" in str(exc):  # torch's writer
            raise CheckpointError(f"{path}: no space left on device while writing the "
                                  "checkpoint (the previous one is kept)") from exc
        raise
    return path


def stale_temp_files(path: str | Path) -> list[Path]:
    """Temporary files an interrupted :func:`save_atomic` of ``path`` left behind."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


def remove_stale_temp_files(path: str | Path) -> list[Path]:
    """Delete the temporary files of interrupted saves of ``path`` (see :func:`save_atomic`);
    returns what was removed. Call it only when no other process writes ``path``."""
    removed = []
    for tmp in stale_temp_files(path):
        tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _reason(exc: Exception) -> str:
    """One line saying why ``torch.load(weights_only=True)`` failed."""
    text = str(exc)
    if "Weights only load failed" in text:
        if "GLOBAL" in text:
            glob = next((ln.strip() for ln in text.splitlines() if "GLOBAL" in ln), "")
            return f"it holds Python objects that are not plain weights, refused ({glob})"
        return "not a torch checkpoint (or corrupted): it does not unpickle as plain weights"
    if "zip archive" in text or "central directory" in text:
        return "truncated or corrupted (not a complete torch zip archive)"
    first = next((ln.strip() for ln in text.splitlines() if ln.strip()), type(exc).__name__)
    return first[:200]


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load with ``weights_only=True`` (no arbitrary code from pickles). A missing file is a
    :class:`FileNotFoundError`; an empty, truncated or foreign one a :class:`CheckpointError`,
    both naming ``path``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: checkpoint file is empty (0 bytes)")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling error is a bad checkpoint
        raise CheckpointError(f"cannot read checkpoint {path}: {_reason(exc)}") from exc
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path} is not a neural3d checkpoint (top level is not a dict)")
    return ckpt
