"""``torch.distributed`` helpers: launched by ``torchrun`` (NCCL on GPUs, gloo on CPUs)."""

from __future__ import annotations

import os
from typing import NamedTuple

import torch
import torch.distributed as dist


class DistInfo(NamedTuple):
    rank: int
    world_size: int
    local_rank: int
    started: bool  # this call created the process group: the caller destroys it at the end


def init_distributed(backend: str | None = None) -> DistInfo:
    """Initialise the process group from torchrun's environment when ``WORLD_SIZE > 1``.

    With CUDA available it first selects the GPU ``LOCAL_RANK``; the backend defaults to NCCL
    there and gloo otherwise. Returns :class:`DistInfo`; ``started`` is False for a plain
    single process and when a group already existed, so the usual shape is::

        info = init_distributed()
        try:
            ...
        finally:
            if info.started:
                torch.distributed.destroy_process_group()
    """
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, False)
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo(0, 1, 0, False)
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    dist.init_process_group(backend=backend)
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, True)


def world_info() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def is_main() -> bool:
    return world_info()[0] == 0


def barrier() -> None:
    if world_info()[1] > 1:
        dist.barrier()
