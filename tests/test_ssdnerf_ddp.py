"""SSDNeRF under DDP (two gloo CPU processes): the latent caches stay identical on both ranks."""

import json
import os
import socket

import torch
import torch.multiprocessing as mp

from neural3d.methods.ssdnerf import load_ssdnerf, train
from neural3d.methods.ssdnerf.config import tiny_config


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank, world, port, root):
    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), NEURAL3D_BACKEND="torch")
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        tr = train(tiny_config(os.path.join(root, "data"), os.path.join(root, "run"), steps=3),
                   device="cpu")
        cache = tr.optimizers["latents"].cache
        torch.save({"latents": cache.latents, "steps": cache.steps},
                   os.path.join(root, f"rank{rank}.pt"))
        with open(os.path.join(root, f"rank{rank}.json"), "w") as f:
            json.dump([h["loss"] for h in tr.history], f)
    finally:
        dist.destroy_process_group()


def test_ddp_two_processes_share_latent_cache(tmp_path):
    os.environ["NEURAL3D_BACKEND"] = "torch"
    # write the toy data once, before the processes start
    from neural3d.methods.multiview import ensure_data

    ensure_data(tiny_config(tmp_path / "data", tmp_path / "x").data)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    a, b = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    assert torch.equal(a["latents"], b["latents"]) and torch.equal(a["steps"], b["steps"])
    # 4 objects, batch 2 per rank: every step updates all 4 objects once
    assert a["steps"].tolist() == [3, 3, 3, 3]
    la, lb = (json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1))
    assert la == lb  # the logged losses are all-reduced means
    ck = load_ssdnerf(tmp_path / "run" / "checkpoints" / "last.pt")
    assert ck.checkpoint_step == 3 and torch.equal(ck.latents, a["latents"])


def _share_worker(rank, world, port, root):
    import torch.distributed as dist

    from neural3d.methods.multiview import load_split

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        cfg = tiny_config(os.path.join(root, "data"), os.path.join(root, "run"))
        data = load_split(cfg.data, "train", share_dir=os.path.join(root, "run"))
        torch.save({"images": data.images.clone(), "ids": data.object_ids},
                   os.path.join(root, f"share{rank}.pt"))
        dist.barrier()
        if rank == 0:       # one rank writes into its mapping ...
            data.images[0, 0, 0, 0] = 7
        dist.barrier()      # ... and the other sees it: the same pages, not a private copy
        with open(os.path.join(root, f"seen{rank}.txt"), "w") as f:
            f.write(str(int(data.images[0, 0, 0, 0])))
    finally:
        dist.destroy_process_group()


def test_ddp_ranks_map_one_copy_of_the_training_images(tmp_path):
    from neural3d.methods.multiview import ensure_data, load_split

    cfg = tiny_config(tmp_path / "data", tmp_path / "x")
    ensure_data(cfg.data)
    single = load_split(cfg.data, "train")
    mp.spawn(_share_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"share{rank}.pt")
        assert torch.equal(got["images"], single.images) and got["ids"] == single.object_ids
        assert (tmp_path / f"seen{rank}.txt").read_text() == "7"
    (cached,) = (tmp_path / "run" / "data_cache").glob("data-train-*.u8")
    assert cached.stat().st_size == single.images.numel()
