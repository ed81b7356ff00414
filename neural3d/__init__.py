"""neural3d: 3D-aware generative models centred on neural rendering.

Layers, lowest first (a layer never imports a higher one):
``cameras``/``config`` -> ``data`` -> ``render`` -> ``fields`` -> ``diffusion`` -> ``metrics``
-> ``train`` -> ``export`` (mesh, image and video writers) -> ``methods`` -> ``eval``
-> ``integrations`` -> ``commands``/``cli``.
"""

__version__ = "0.1.0"
