"""Two CPU processes with gloo DDP equal one process with the combined batch (one model, and
two named modules stepped in manual mode)."""

import json
import socket

import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from neural3d.train import TrainConfig, Trainer, init_distributed

STEPS, BATCH = 5, 8


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(out_dir, rank=0, world=1):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 8), nn.Tanh(), nn.Linear(8, 1))
    cfg = TrainConfig(steps=STEPS, seed=1, out_dir=str(out_dir), progress=False,
                      tensorboard=False, ckpt_every=0)
    trainer = Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), cfg)
    X = torch.linspace(-1, 1, 96).reshape(32, 3)
    y = X.prod(1, keepdim=True)
    g = trainer.generator("data")  # same on all ranks: draw the global batch, take a shard

    def step_fn(step):
        idx = torch.randint(0, 32, (BATCH,), generator=g)[rank::world]
        return {"loss": ((trainer.model(X[idx]) - y[idx]) ** 2).mean()}

    hist = trainer.fit(step_fn)
    return [h["loss"] for h in hist], [p.detach().clone() for p in model.parameters()]


def _run_gan(out_dir, rank=0, world=1):
    """A GAN-shaped manual step: a D step on real and fake, then a G step through D."""
    torch.manual_seed(0)
    G = nn.Sequential(nn.Linear(2, 8), nn.Tanh(), nn.Linear(8, 1))
    D = nn.Sequential(nn.Linear(1, 8), nn.Tanh(), nn.Linear(8, 1))
    opts = {"G": torch.optim.Adam(G.parameters(), 1e-2), "D": torch.optim.SGD(D.parameters(), 0.1)}
    cfg = TrainConfig(steps=STEPS, seed=1, out_dir=str(out_dir), progress=False,
                      tensorboard=False, ckpt_every=0, grad_clip=1.0)
    trainer = Trainer({"G": G, "D": D}, opts, cfg, ema={"G": 0.9}, manual=True)
    g = trainer.generator("data")

    def step_fn(step):
        real = (torch.randn(BATCH, 1, generator=g) + 1)[rank::world]
        z = torch.randn(BATCH, 2, generator=g)[rank::world]
        Gm, Dm = trainer.modules["G"], trainer.modules["D"]
        fake = Gm(z)
        loss_d = F.softplus(-Dm(real)).mean() + F.softplus(Dm(fake.detach())).mean()
        trainer.backward_step(loss_d, "D")
        loss_g = F.softplus(-Dm(fake)).mean()
        trainer.backward_step(loss_g, "G")
        return {"loss": (loss_d + loss_g).detach()}

    hist = trainer.fit(step_fn)
    mods = (G, D, trainer.emas["G"].module)
    return [h["loss"] for h in hist], [p.detach().clone() for m in mods for p in m.parameters()]


def _worker(rank, world, port, out_dir, which):
    import os

    import torch.distributed as dist

    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    info = init_distributed("gloo")
    assert info.started and (info.rank, info.world_size, info.local_rank) == (rank, world, rank)
    assert not init_distributed().started  # a second call leaves the group alone
    try:
        losses, params = (_run_gan if which == "gan" else _run)(out_dir, rank, world)
        if rank == 0:
            with open(os.path.join(out_dir, "ddp.json"), "w") as f:
                json.dump({"losses": losses, "params": [p.tolist() for p in params]}, f)
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("which", ["model", "gan"])
def test_ddp_two_gloo_processes_match_single_process(tmp_path, which):
    single_losses, single_params = (_run_gan if which == "gan" else _run)(tmp_path / "single")
    out = tmp_path / "ddp"
    out.mkdir()
    mp.spawn(_worker, args=(2, _free_port(), str(out), which), nprocs=2, join=True)
    res = json.loads((out / "ddp.json").read_text())
    assert torch.allclose(torch.tensor(res["losses"]), torch.tensor(single_losses), atol=1e-6)
    for p, q in zip(res["params"], single_params, strict=True):
        assert torch.allclose(torch.tensor(p), q, atol=1e-6)
    assert (out / "run.json").is_file() and (out / "checkpoints" / "last.pt").is_file()
