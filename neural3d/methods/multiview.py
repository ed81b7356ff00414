"""Multi-view object data shared by the 3D methods (SSDNeRF, NerfDiff, pixelNeRF-lite).

- :class:`MultiViewDataConfig` — the ``data:`` section: an SRN-layout root (SRN cars/chairs, ABO
  tables, or the toy category written on first use when ``toy`` is true).
- :func:`ensure_data`, :func:`load_split` — the split's objects as one :class:`MultiObjectSet`
  (all views in RAM as uint8, per-object ``offsets``/``counts``; under DDP one copy per machine,
  mapped by every rank from the run folder).
- :func:`draw_rays` — random training rays of given views; :func:`conditioned_batch` — the batch
  of the image-conditioned methods: per object one input view and rays of its other views.
"""

from __future__ import annotations

import math
import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch

from neural3d.cameras import Cameras, rays_for_pixels
from neural3d.config import Range, at_least, between


@dataclass
class MultiViewDataConfig:
    limits: ClassVar[dict[str, Range]] = {
        "resolution": at_least(0), "max_objects": at_least(0), "toy_objects": at_least(1),
        "toy_views": at_least(1), "toy_test_objects": at_least(0), "toy_test_views": at_least(0),
        "toy_res": between(4, 4096)}
    root: str = "outputs/data/toy_ssdnerf"
    category: str = "cars"
    resolution: int = 0             # 0 = native
    max_objects: int = 0            # 0 = all training objects
    # toy data written when ``root`` has no ``<category>_train`` folder (toy configs only)
    toy: bool = False
    toy_objects: int = 48
    toy_views: int = 24
    toy_test_objects: int = 8
    toy_test_views: int = 50
    toy_res: int = 32
    toy_seed: int = 0

    def native_res(self) -> int:
        """The image size the methods see: ``resolution``, else the toy renders' or SRN's 128."""
        return self.resolution or (self.toy_res if self.toy else 128)


def ensure_data(dc: MultiViewDataConfig, tag: str = "data") -> Path:
    """The dataset root; the toy set is written there first when ``dc.toy`` and it is missing
    (progress lines prefixed ``[tag]``)."""
    if not dc.toy:
        return Path(dc.root)
    from neural3d.data.toy import ensure_toy_dataset

    return ensure_toy_dataset(dc.root, dc.category, lambda m: print(f"[{tag}] {m}", flush=True),
                              objects=dc.toy_objects, views=dc.toy_views,
                              test_views=dc.toy_test_views, res=dc.toy_res, seed=dc.toy_seed,
                              test_objects=dc.toy_test_objects)


@dataclass
class MultiObjectSet:
    """All views of several objects: ``images [M,H,W,3]`` **uint8** (a quarter of float32: SRN
    cars' 2458 x 50 views at 128 px are 6 GB as uint8), ``cameras`` (M), per-object
    ``offsets``/``counts`` into them, ``object_ids``. :meth:`views`, :func:`draw_rays` and
    :func:`conditioned_batch` hand out float32 in [0, 1] (``uint8 / 255``)."""

    images: torch.Tensor
    cameras: Cameras
    offsets: torch.Tensor
    counts: torch.Tensor
    object_ids: list[str]

    def __len__(self) -> int:
        return len(self.object_ids)

    def views(self, i: int) -> tuple[torch.Tensor, Cameras]:
        """Object ``i``'s views: ``(images [V,H,W,3] float32 in [0, 1], cameras)``."""
        a, n = int(self.offsets[i]), int(self.counts[i])
        idx = torch.arange(a, a + n)
        return to_float(self.images[a:a + n]), self.cameras[idx]

    @staticmethod
    def assemble(images: list[torch.Tensor], cameras: list[Cameras], ids: list[str]
                 ) -> MultiObjectSet:
        """From per-object uint8 ``images [V_i,H,W,3]``, their cameras and ids."""
        counts = torch.tensor([len(im) for im in images])
        offsets = torch.cumsum(counts, 0) - counts
        return MultiObjectSet(torch.cat(images), Cameras.cat(cameras), offsets, counts, ids)


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """Float images in [0, 1] -> ``round(255 x)`` uint8 (uint8 passes through)."""
    if images.dtype == torch.uint8:
        return images
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 images -> float32 ``x / 255``."""
    return images.float() / 255


def load_split(dc: MultiViewDataConfig, split: str, max_objects: int | None = None,
               tag: str = "data", progress: bool = True,
               share_dir: str | Path | None = None) -> MultiObjectSet:
    """The ``split`` of ``dc``'s data (written first when it is the toy set), one object at a
    time into uint8 storage (float32 for one object at most), with a progress bar.

    Under DDP with ``share_dir`` (the run folder) the machine holds one copy instead of one per
    rank: local rank 0 reads the split and writes it to ``share_dir/data_cache/`` (the images
    as raw uint8, named after the split and the host), then every rank maps that file shared
    (``torch.from_file(shared=True)``: the pages live once, in the OS cache)."""
    from neural3d.train.distributed import world_info

    if share_dir is None or world_info()[1] == 1:
        return _read_split(dc, split, max_objects, tag, progress)
    from neural3d.train.distributed import barrier

    rank = world_info()[0]
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    folder = Path(share_dir) / "data_cache"
    stem = folder / f"{tag}-{split}-{socket.gethostname()}"
    if local_rank == 0:
        data = _read_split(dc, split, max_objects, tag, progress)
        folder.mkdir(parents=True, exist_ok=True)
        data.images.numpy().tofile(f"{stem}.u8")
        torch.save({"shape": list(data.images.shape), "cameras": data.cameras,
                    "offsets": data.offsets, "counts": data.counts,
                    "object_ids": data.object_ids}, f"{stem}.pt")
        del data
    barrier()
    index = torch.load(f"{stem}.pt", weights_only=False)  # written by this run just now
    images = torch.from_file(f"{stem}.u8", shared=True, size=math.prod(index["shape"]),
                             dtype=torch.uint8).view(*index["shape"])
    return MultiObjectSet(images, index["cameras"], index["offsets"], index["counts"],
                          index["object_ids"])


def _read_split(dc: MultiViewDataConfig, split: str, max_objects: int | None, tag: str,
                progress: bool) -> MultiObjectSet:
    from tqdm.auto import tqdm

    from neural3d.data import SRNCategory

    cat = SRNCategory(ensure_data(dc, tag), dc.category, split, resolution=dc.resolution or None)
    ids = cat.object_ids[:max_objects] if max_objects else cat.object_ids
    images, cameras, object_ids = [], [], []
    for oid in tqdm(ids, desc=f"{tag}: {dc.category} {split}", unit="obj",
                    disable=not progress or len(ids) < 64):
        obj = cat.read(oid)
        images.append(to_uint8(obj.images))
        cameras.append(obj.cameras)
        object_ids.append(obj.object_id)
    return MultiObjectSet.assemble(images, cameras, object_ids)


def draw_rays(data: MultiObjectSet, cam: torch.Tensor, generator: torch.Generator,
              ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One random pixel of each of the global view indices ``cam [...]`` (any shape) ->
    ``(origins [..., 3], directions [..., 3], rgb [..., 3])`` on the CPU (pixel centres)."""
    H, W = data.images.shape[1:3]
    px = torch.randint(0, W, cam.shape, generator=generator)
    py = torch.randint(0, H, cam.shape, generator=generator)
    o, d = rays_for_pixels(data.cameras, cam.reshape(-1), px.reshape(-1) + 0.5,
                           py.reshape(-1) + 0.5)
    return (o.reshape(*cam.shape, 3), d.reshape(*cam.shape, 3),
            to_float(data.images[cam, py, px]))


@dataclass
class ConditionedBatch:
    """A batch of the image-conditioned methods: ``images [B,H,W,3]`` (the input views),
    ``cameras`` (their B cameras), ``origins/directions/rgb [B,R,3]`` (rays of the objects'
    views, world space), ``objects [B]`` (object indices), ``views [B]`` (the input views'
    indices among their object's views)."""

    images: torch.Tensor
    cameras: Cameras
    origins: torch.Tensor
    directions: torch.Tensor
    rgb: torch.Tensor
    objects: torch.Tensor
    views: torch.Tensor

    def to(self, device) -> ConditionedBatch:
        return ConditionedBatch(self.images.to(device), self.cameras.to(device),
                                self.origins.to(device), self.directions.to(device),
                                self.rgb.to(device), self.objects, self.views)


def conditioned_batch(data: MultiObjectSet, batch: int, rays: int, generator: torch.Generator,
                      ) -> ConditionedBatch:
    """``batch`` random objects (without repeats when there are enough), one random input view
    each, and ``rays`` random rays drawn uniformly from all the object's views (the input
    included)."""
    N = len(data)
    objs = (torch.randperm(N, generator=generator)[:batch] if N >= batch
            else torch.randint(0, N, (batch,), generator=generator))
    counts = data.counts[objs]
    inp = (torch.rand(batch, generator=generator) * counts).long()
    view = (torch.rand(batch, rays, generator=generator) * counts[:, None]).long()
    first = data.offsets[objs]
    o, d, rgb = draw_rays(data, first[:, None] + view, generator)
    return ConditionedBatch(to_float(data.images[first + inp]), data.cameras[first + inp], o, d,
                            rgb, objs, inp)


def other_views(data: MultiObjectSet, objects: torch.Tensor, views: torch.Tensor,
                generator: torch.Generator) -> torch.Tensor:
    """For each object ``objects[k]``, a uniformly drawn view other than its ``views[k]``
    (indices among the object's views; objects need two views)."""
    counts = data.counts[objects]
    if bool((counts < 2).any()):
        raise ValueError("other_views needs objects with at least two views")
    other = (torch.rand(len(objects), generator=generator) * (counts - 1)).long()
    return other + (other >= views).long()
