"""neural3d: 3D-aware generative models centred on neural rendering.

Layers, lowest first (a layer never imports a higher one):
``cameras``/``config``/``device`` -> ``data`` -> ``render`` -> ``fields`` -> ``diffusion``
-> ``metrics`` -> ``train`` -> ``export`` (mesh, image and video writers) -> ``methods``
-> ``eval`` -> ``integrations`` -> ``commands``/``cli``.

``neural3d.load(path)`` rebuilds the method of any checkpoint (see :mod:`neural3d.methods`).
"""

__version__ = "0.1.0"


def load(path, device="cpu", ema="auto", method=None):
    """The registered method of checkpoint ``path``, ready for inference
    (:func:`neural3d.methods.registry.load`; imported on first use so ``import neural3d`` stays
    light)."""
    from neural3d.methods.registry import load as load_method

    return load_method(path, device, ema, method)
