"""``neural3d-srn``: a nerfstudio dataparser for SRN-layout objects (ShapeNet SRN, ABO, the toy
category written by :mod:`neural3d.data.toy`).

The object folder is read with our reader (:func:`neural3d.data.read_srn_object`: validation,
intrinsics, OpenCV poses); the cameras are converted to nerfstudio's OpenGL ``[N,3,4]``
convention with :func:`neural3d.cameras.to_nerfstudio`; images are handed to nerfstudio as file
names with ``alpha_color`` = our background (white), so RGBA renders are composited exactly as
our reader composites them. Scene box: the object's AABB (the toy dataset's recorded box, else a
cube from the camera distances, or ``--aabb``). Split: every ``holdout_every``-th view (0, 8,
16, ...) is held out for val/test, the rest train (as ``neural3d fit``).

This module imports only nerfstudio's data-parser building blocks (never its method registry or
data managers): nerfstudio loads it while building its dataparser union.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from neural3d.integrations.nerfstudio import require_nerfstudio

require_nerfstudio()

import torch  # noqa: E402
from nerfstudio.cameras.cameras import Cameras as NSCameras  # noqa: E402
from nerfstudio.cameras.cameras import CameraType  # noqa: E402
from nerfstudio.data.dataparsers.base_dataparser import (  # noqa: E402
    DataParser,
    DataParserConfig,
    DataparserOutputs,
)
from nerfstudio.data.scene_box import SceneBox  # noqa: E402
from nerfstudio.plugins.registry_dataparser import DataParserSpecification  # noqa: E402

from neural3d.cameras import to_nerfstudio  # noqa: E402
from neural3d.data import DataError, MultiViewObject, read_srn_object  # noqa: E402
from neural3d.data.core import IMAGE_EXTS  # noqa: E402
from neural3d.data.scenes import camera_aabb, holdout_split, scale_aabb, toy_aabb  # noqa: E402
from neural3d.data.srn import is_srn_object  # noqa: E402


@dataclass
class SRNDataParserConfig(DataParserConfig):
    """SRN-layout object folder (``intrinsics.txt``, ``rgb/``, ``pose/``) -> nerfstudio."""

    _target: type = field(default_factory=lambda: SRNDataParser)
    data: Path = Path()
    """An SRN object folder, or a split folder holding several (then ``object`` picks one)."""
    object: str = ""
    """Inside a split folder: the object id, or its index in sorted order (default: the first)."""
    holdout_every: int = 8
    """Every N-th view (0, N, 2N, ...) is held out for val/test; the rest train."""
    aabb: tuple[float, float, float, float, float, float] | None = None
    """Scene box xmin ymin zmin xmax ymax zmax; default: the toy dataset's recorded AABB, else a
    cube of half-size 0.6 x the nearest camera distance (SRN/ABO objects sit at the origin)."""
    aabb_scale: float = 1.0
    """Scale the scene box about its centre (a margin > 1 if objects touch it)."""
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Background colour: RGBA images are composited on it (SRN and ABO render on white)."""


def resolve_object_folder(data: Path, obj: str = "") -> Path:
    """``data`` if it is an SRN object folder, else the object ``obj`` (id or index) inside it."""
    data = Path(data)
    if is_srn_object(data):
        return data
    if not data.is_dir():
        raise DataError(f"{data}: no such SRN object folder")
    objects = sorted(p for p in data.iterdir() if p.is_dir() and is_srn_object(p))
    if not objects:
        raise DataError(f"{data}: neither an SRN object folder (intrinsics.txt, rgb/, pose/) nor "
                        f"a split folder holding such objects")
    if obj == "":
        return objects[0]
    by_id = {p.name: p for p in objects}
    if obj in by_id:
        return by_id[obj]
    if obj.lstrip("-").isdigit() and -len(objects) <= int(obj) < len(objects):
        return objects[int(obj)]
    raise DataError(f"{data}: no object {obj!r} (ids such as {', '.join(list(by_id)[:3])}, or an "
                    f"index below {len(objects)})")


class SRNDataParser(DataParser):
    """Reads one SRN-layout object with :func:`neural3d.data.read_srn_object`."""

    config: SRNDataParserConfig

    def __init__(self, config: SRNDataParserConfig):
        super().__init__(config=config)
        self._object: MultiViewObject | None = None
        self._folder: Path | None = None

    def read(self) -> MultiViewObject:
        """The whole object (all views, OpenCV cameras), read once."""
        if self._object is None:
            self._folder = resolve_object_folder(self.config.data, self.config.object)
            self._object = read_srn_object(self._folder, background=self.config.background)
        return self._object

    def scene_aabb(self) -> torch.Tensor:
        obj = self.read()
        assert self._folder is not None
        box = torch.tensor(self.config.aabb, dtype=torch.float32) if self.config.aabb else None
        if box is None:
            box = toy_aabb(self._folder)
        if box is None:
            box = camera_aabb(obj.cameras)
        if box.shape != (6,) or not bool((box[3:] > box[:3]).all()):
            raise DataError(f"{self._folder}: bad scene box {box.tolist()} (need xmin ymin zmin "
                            f"xmax ymax zmax with max > min)")
        return scale_aabb(box, self.config.aabb_scale)

    def image_paths(self, view_ids: list[str]) -> list[Path]:
        assert self._folder is not None
        rgb = self._folder / "rgb"
        paths = []
        for stem in view_ids:
            found = [rgb / f"{stem}{s}" for s in IMAGE_EXTS if (rgb / f"{stem}{s}").is_file()]
            if not found:
                raise DataError(f"{rgb}: no image file for view {stem}")
            paths.append(found[0])
        return paths

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        if split not in ("train", "val", "test"):
            raise ValueError(f"neural3d-srn: unknown split {split!r} (train, val, test)")
        obj = self.read()
        train_idx, held_idx = holdout_split(len(obj), self.config.holdout_every)
        idx = train_idx if split == "train" or not held_idx else held_idx
        views = obj.select(idx)
        ns = to_nerfstudio(views.cameras)
        cameras = NSCameras(camera_type=CameraType.PERSPECTIVE, **ns)
        box = self.scene_aabb()
        background = torch.tensor(self.config.background, dtype=torch.float32)
        return DataparserOutputs(
            image_filenames=self.image_paths(views.view_ids),
            cameras=cameras,
            alpha_color=background,
            scene_box=SceneBox(aabb=box.reshape(2, 3)),
            metadata={"neural3d_background": tuple(self.config.background),
                      "neural3d_object": obj.object_id,
                      "neural3d_view_ids": list(views.view_ids)},
        )


neural3d_srn = DataParserSpecification(
    config=SRNDataParserConfig(),
    description="neural3d: one SRN-layout object (ShapeNet SRN, ABO, neural3d toy), white "
                "background, every 8th view held out",
)

__all__ = ["SRNDataParser", "SRNDataParserConfig", "neural3d_srn", "resolve_object_folder"]
