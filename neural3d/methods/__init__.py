"""The method layer: every generative method is a registered plugin over the shared parts.

- :mod:`.registry` — :class:`Method`, :func:`register_method`, :func:`get_method`,
  :func:`available_methods`, :func:`load` (any checkpoint -> its method, ready for inference).
- :mod:`.training` — :func:`train_method`: build, the shared trainer, ``step``, ``finish``.
- Built-in methods: ``fit`` (:mod:`.fit`), ``ssdnerf`` (:mod:`.ssdnerf`), ``diffusion``
  (:mod:`.diffusion2d`). Third-party packages add theirs through the ``neural3d.methods``
  entry-point group.
"""

from neural3d.methods.registry import (
    Built,
    Method,
    MethodError,
    available_methods,
    get_method,
    load,
    register_method,
)
from neural3d.methods.training import train_method

__all__ = ["Built", "Method", "MethodError", "available_methods", "get_method", "load",
           "register_method", "train_method"]
