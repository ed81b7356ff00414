"""Integrations with other frameworks. Nothing here is imported by the core package.

- :mod:`neural3d.integrations.nerfstudio`: nerfstudio plugin (methods ``neural3d-triplane`` and
  ``neural3d-hashgrid``, dataparser ``neural3d-srn``); needs ``pip install neural3d[nerfstudio]``.
"""
