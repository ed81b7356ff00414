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

import json
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

from neural3d.cameras import Cameras, to_nerfstudio  # noqa: E402
from neural3d.data import DataError, MultiViewObject, read_srn_object  # noqa: E402
from neural3d.data.srn import is_srn_object  # noqa: E402

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".PNG", ".JPG", ".JPEG")


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


def default_aabb(cams: Cameras, folder: Path) -> torch.Tensor:
    """The toy dataset's recorded AABB when ``folder`` comes from :mod:`neural3d.data.toy`
    (``toy_dataset.json`` up to three levels up), else a cube from the camera distances."""
    for parent in [folder, *list(folder.resolve().parents)[:3]]:
        meta = parent / "toy_dataset.json"
        if meta.is_file():
            try:
                lo, hi = json.loads(meta.read_text())["aabb"]
                return torch.tensor([*lo, *hi], dtype=torch.float32)
            except (KeyError, ValueError, TypeError) as exc:
                raise DataError(f"{meta}: no readable 'aabb' ({exc})") from exc
    half = 0.6 * float(cams.centers.norm(dim=-1).min())
    return torch.tensor([-half] * 3 + [half] * 3, dtype=torch.float32)


def split_indices(n_views: int, split: str, every: int) -> list[int]:
    """Views of ``split``: val/test = every ``every``-th view (0, every, ...), train = the rest.
    With fewer than 2 views (or ``every < 2``) every split gets all views."""
    idx = list(range(n_views))
    if n_views < 2 or every < 2:
        return idx
    held = set(idx[::every])
    if split == "train":
        return [i for i in idx if i not in held]
    return sorted(held)


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
        box = (torch.tensor(self.config.aabb, dtype=torch.float32) if self.config.aabb
               else default_aabb(obj.cameras, self._folder))
        if box.shape != (6,) or not bool((box[3:] > box[:3]).all()):
            raise DataError(f"{self._folder}: bad scene box {box.tolist()} (need xmin ymin zmin "
                            f"xmax ymax zmax with max > min)")
        mid, half = (box[:3] + box[3:]) / 2, (box[3:] - box[:3]) / 2 * self.config.aabb_scale
        return torch.cat([mid - half, mid + half])

    def image_paths(self, view_ids: list[str]) -> list[Path]:
        assert self._folder is not None
        rgb = self._folder / "rgb"
        paths = []
        for stem in view_ids:
            found = [rgb / f"{stem}{s}" for s in IMAGE_SUFFIXES if (rgb / f"{stem}{s}").is_file()]
            if not found:
                raise DataError(f"{rgb}: no image file for view {stem}")
            paths.append(found[0])
        return paths

    def _generate_dataparser_outputs(self, split: str = "train", **kwargs) -> DataparserOutputs:
        if split not in ("train", "val", "test"):
            raise ValueError(f"neural3d-srn: unknown split {split!r} (train, val, test)")
        obj = self.read()
        idx = split_indices(len(obj), split, self.config.holdout_every)
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

__all__ = ["SRNDataParser", "SRNDataParserConfig", "default_aabb", "neural3d_srn",
           "resolve_object_folder", "split_indices"]
