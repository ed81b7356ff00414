"""The web viewer (``neural3d view``) and the camera paths it records.

* :mod:`~neural3d.viewer.camera` converts a viewer camera (position, ``wxyz`` rotation, vertical
  field of view, aspect: viser's convention) to and from :class:`~neural3d.cameras.Cameras`.
* :mod:`~neural3d.viewer.camera_path` reads and writes nerfstudio ``camera_path.json`` files
  and interpolates keyframes (``neural3d render --camera-path`` reads them too).
* :mod:`~neural3d.viewer.scene` is what a viewer shows of a loaded method: a fitted scene, or
  the samples of a generative method, rendered through the method's ``render``.
* :mod:`~neural3d.viewer.server` is the viser app (viser is the optional extra ``viewer``;
  it is imported only there).
"""
