"""neural3d: 3D-aware generative models centred on neural rendering.

Layers, lowest first (a layer never imports a higher one):
``cameras``/``config``/``device`` -> ``data`` -> ``render`` -> ``fields`` -> ``diffusion``
-> ``metrics`` -> ``train`` -> ``export`` (mesh, image and video writers) -> ``methods``
-> ``eval`` -> ``integrations`` -> ``commands``/``cli``.

The public names below are imported on first use, so ``import neural3d`` stays light::

    from neural3d import Cameras, TriplaneField, VolumeRenderer, composite, load

``neural3d.load(path)`` rebuilds the method of any checkpoint, or of a folder written by
``neural3d export --format safetensors`` (see :mod:`neural3d.methods`).
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

#: public name -> module that defines it
_PUBLIC = {
    "Cameras": "neural3d.cameras",
    "TriplaneField": "neural3d.fields",
    "HashGridField": "neural3d.fields",
    "MLPNeRF": "neural3d.fields",
    "VolumeRenderer": "neural3d.render",
    "RendererConfig": "neural3d.render",
    "composite": "neural3d.render",
    "composite_packed": "neural3d.render",
    "render_image": "neural3d.render",
    "Method": "neural3d.methods",
    "register_method": "neural3d.methods",
    "available_methods": "neural3d.methods",
}

__all__ = ["__version__", "load", *_PUBLIC]


def load(path, device="cpu", ema="auto", method=None):
    """The registered method of checkpoint ``path`` (or of a safetensors export folder),
    ready for inference (:func:`neural3d.methods.registry.load`)."""
    from neural3d.methods.registry import load as load_method

    return load_method(path, device, ema, method)


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'neural3d' has no attribute {name!r}")
