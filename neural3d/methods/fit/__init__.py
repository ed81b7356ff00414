"""``fit``: single-object fitting (see :mod:`.method`).

- :mod:`.method` — :class:`FitConfig` and :class:`Fit`, the registered method.
- :mod:`.model` — :class:`FitModel`: a field plus its occupancy grid, rendered by the shared
  :class:`~neural3d.render.VolumeRenderer`.
- :mod:`.outputs` — held-out comparison images, camera paths, turntables.
"""

from neural3d.methods.fit.method import Fit, FitConfig
from neural3d.methods.fit.model import FitModel, camera_record, record_field_config
from neural3d.methods.fit.outputs import path_cameras, save_renders_png, write_turntable

__all__ = ["Fit", "FitConfig", "FitModel", "camera_record", "path_cameras",
           "record_field_config", "save_renders_png", "write_turntable"]
