"""nerfstudio plugin: our fields, samplers and compositing kernels as nerfstudio methods, and a
dataparser for SRN-layout objects (ShapeNet SRN, ABO, the toy category).

Registered through entry points (see ``docs/nerfstudio.md``)::

    nerfstudio.method_configs:     neural3d-triplane, neural3d-hashgrid  (MethodSpecification)
    nerfstudio.dataparser_configs: neural3d-srn                          (DataParserSpecification)

This package imports without nerfstudio: :func:`available` says whether it is installed, and
touching anything that needs it (``Neural3DModel``, ``SRNDataParserConfig``, the submodules
``model``, ``dataparser``, ``methods``) raises ``ImportError("nerfstudio not installed: pip install
neural3d[nerfstudio]")``.

Module layout avoids nerfstudio's circular-import trap: nerfstudio builds its dataparser union
(``nerfstudio.configs.dataparser_configs``) while importing its data managers, and that loads our
dataparser entry point; so :mod:`.dataparser` imports only nerfstudio's data-parser building blocks,
and nothing here imports nerfstudio's method registry (``nerfstudio.configs.method_configs``).
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

MISSING_MESSAGE = "nerfstudio not installed: pip install neural3d[nerfstudio]"

#: the nerfstudio versions this plugin is tested with (the ``nerfstudio`` extra's range)
TESTED_VERSIONS = ">=1.1,<1.2"

_LAZY = {
    "Neural3DModel": "model",
    "Neural3DModelConfig": "model",
    "SRNDataParser": "dataparser",
    "SRNDataParserConfig": "dataparser",
    "neural3d_srn": "dataparser",
    "neural3d_triplane": "methods",
    "neural3d_hashgrid": "methods",
    "make_trainer_config": "methods",
}

__all__ = ["MISSING_MESSAGE", "TESTED_VERSIONS", "available", "require_nerfstudio", *_LAZY]


def available() -> bool:
    """Whether nerfstudio (and torchvision, which it needs) can be imported."""
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("nerfstudio", "torchvision"))
    except (ImportError, ValueError):
        return False


def require_nerfstudio() -> None:
    """Raise ``ImportError`` with the install hint when nerfstudio is missing."""
    for mod in ("nerfstudio", "torchvision"):
        try:
            importlib.import_module(mod)
        except ImportError as exc:
            raise ImportError(f"{MISSING_MESSAGE} ({mod}: {exc})") from exc


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
