"""``neural3d diffusion train|sample``: 2D diffusion models on the toy category's renders.

::

    neural3d diffusion train --config configs/diffusion_toy_unet.yaml [key.sub=value ...]
    neural3d diffusion sample RUN/checkpoints/last.pt --sampler ddim --steps 50 --cfg 3.0 \\
        --out grid.png

``train`` renders the toy categories (``data.categories``, label = index) once into
``data.root`` with :func:`neural3d.data.toy.write_toy_dataset` if they are missing, loads every
training view at ``data.res`` as a class-labelled image set in ``[-1, 1]`` and trains
``model.kind`` (unet, dit, mdm, fdm) with the shared trainer (:mod:`neural3d.train`: EMA,
atomic checkpoints, resume, TensorBoard). ``sample`` loads a checkpoint (EMA weights when
present), draws ``--n`` images per class with classifier-free guidance ``--cfg`` (convention
``uncond + w (cond - uncond)``; 1 = plain conditional) and writes one row per class.

The helpers (``load_toy_images``, ``build_pipeline``, ``train_experiment``, ``load_pipeline``,
``save_grid``) are used by ``benchmarks/bench_diffusion.py``.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("diffusion", help="2D diffusion models (U-Net, DiT, Matryoshka, "
                              "f-DM) on toy renders: train, sample")
    sub = p.add_subparsers(dest="diffusion_command", metavar="ACTION")
    t = sub.add_parser("train", help="train a diffusion model from a YAML config")
    t.add_argument("--config", required=True, help="configs/diffusion_*.yaml")
    t.add_argument("overrides", nargs="*", help="dotted overrides, e.g. run.steps=200")
    t.set_defaults(func=run_train)
    s = sub.add_parser("sample", help="sample an image grid from a checkpoint")
    s.add_argument("ckpt", help="checkpoint written by 'diffusion train'")
    s.add_argument("--sampler", default="ddim", choices=["ddpm", "ddim", "dpmpp2m", "ode"])
    s.add_argument("--steps", type=int, default=50)
    s.add_argument("--cfg", type=float, default=3.0,
                   help="classifier-free guidance weight w: uncond + w*(cond - uncond)")
    s.add_argument("--eta", type=float, default=None, help="DDIM eta (default 0)")
    s.add_argument("--n", type=int, default=8, help="images per class")
    s.add_argument("--classes", default="all",
                   help="comma-separated category names or indices, or 'all'")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-ema", action="store_true", help="use the raw (not EMA) weights "
                   "(default: EMA once step * (1 - decay) >= 5)")
    s.add_argument("--device", default=None)
    s.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    s.add_argument("--out", default="grid.png")
    s.set_defaults(func=run_sample)
    p.set_defaults(func=lambda a: p.print_help() or 1)


# ------------------------------------------------------------------------------- data
def ensure_toy_data(data_cfg, progress: bool = True) -> Path:
    """Write the toy categories into ``data.root`` unless they are already there."""
    import json

    from neural3d.data.toy import write_toy_dataset

    root = Path(data_cfg.root)
    summary = root / "toy_dataset.json"
    have = {}
    if summary.is_file():
        have = json.loads(summary.read_text()).get("categories", {})
    for cat in data_cfg.categories:
        info = have.get(cat, {})
        ok = (info.get("res") == data_cfg.res and info.get("seed") == data_cfg.seed
              and info.get("views") == data_cfg.views
              and info.get("supersample", 1) == data_cfg.supersample
              and len(info.get("splits", {}).get(f"{cat}_train", [])) == data_cfg.objects)
        if not ok:
            write_toy_dataset(root, cat, objects=data_cfg.objects, views=data_cfg.views,
                              test_views=0, res=data_cfg.res, seed=data_cfg.seed,
                              supersample=data_cfg.supersample, progress=progress)
    return root


def load_toy_images(data_cfg, progress: bool = True):
    """``(images [N,3,res,res] in [-1,1], labels [N])`` from the toy renders (written if
    missing); labels index ``data.categories``."""
    import numpy as np
    import torch
    from PIL import Image

    root = ensure_toy_data(data_cfg, progress)
    images, labels = [], []
    for label, cat in enumerate(data_cfg.categories):
        files = sorted((root / f"{cat}_train").glob("*/rgb/*.png"))
        if not files:
            raise FileNotFoundError(f"no training renders under {root / (cat + '_train')}")
        for f in files:
            with Image.open(f) as im:
                arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            if arr.shape[0] != data_cfg.res:
                raise ValueError(f"{f}: {arr.shape[0]} px, config data.res={data_cfg.res}")
            images.append(arr)
            labels.append(label)
    x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 127.5 - 1
    return x.contiguous(), torch.tensor(labels, dtype=torch.long)


# ------------------------------------------------------------------------------- build/train
def load_experiment(path: str | None, overrides: list[str] | None = None):
    from neural3d.config import load_config
    from neural3d.diffusion.config import DiffusionExperiment

    return load_config(DiffusionExperiment, path, overrides or [])


def build_pipeline(exp):
    from neural3d.diffusion.pipeline import DiffusionPipeline

    return DiffusionPipeline(exp)


def train_experiment(exp, images=None, labels=None, device=None, max_seconds: float | None = None):
    """Train ``exp`` with the shared trainer; returns ``(trainer, history)``.

    ``max_seconds`` stops early at equal wall-clock budget (benchmarks)."""
    import time

    import torch

    from neural3d.config import to_dict
    from neural3d.train import TrainConfig, Trainer

    if exp.run.threads > 0:
        torch.set_num_threads(exp.run.threads)
    if images is None:
        images, labels = load_toy_images(exp.data, progress=exp.run.progress)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    pipe = build_pipeline(exp).to(device)
    images, labels = images.to(device), labels.to(device)
    opt = torch.optim.AdamW(pipe.parameters(), lr=exp.optim.lr,
                            weight_decay=exp.optim.weight_decay)
    warm = max(1, exp.optim.warmup)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    r = exp.run
    tcfg = TrainConfig(steps=r.steps, seed=r.seed, out_dir=r.out_dir, log_every=r.log_every,
                       ckpt_every=r.ckpt_every, ema_decay=r.ema_decay, grad_clip=r.grad_clip,
                       progress=r.progress, tensorboard=r.tensorboard, resume=r.resume)
    record = to_dict(exp)
    record["num_images"] = int(len(images))
    trainer = Trainer(pipe, opt, tcfg, scheduler=sched, record=record, device=device)
    g = trainer.generator("data")
    trainer.maybe_resume()

    def step_fn(step: int) -> dict:
        idx = torch.randint(len(images), (exp.optim.batch,), generator=g).to(device)
        loss, parts = trainer.model(images[idx], labels[idx], generator=g, step=step)
        return {"loss": loss, **parts}

    if max_seconds is None:
        return trainer, trainer.fit(step_fn)
    # equal wall-clock budget: run in chunks until the budget (or run.steps) is spent
    t_start, history = time.time(), []
    while trainer.step < r.steps and time.time() - t_start < max_seconds:
        history = trainer.fit(step_fn, steps=min(r.steps, trainer.step + 10))
    return trainer, history


def load_pipeline(ckpt_path: str | Path, use_ema: bool | str = "auto", device=None):
    """Rebuild the pipeline of a training checkpoint.

    ``use_ema="auto"`` takes the EMA weights when present and the run is long enough for the
    average to have forgotten the initial weights (``step * (1 - decay) >= 5``); short runs
    (smoke tests) use the raw weights."""
    import torch

    from neural3d.config import from_dict
    from neural3d.diffusion.config import DiffusionExperiment
    from neural3d.train import load_checkpoint

    ckpt = load_checkpoint(ckpt_path, map_location="cpu")
    record = dict(ckpt.get("record") or {})
    record.pop("num_images", None)
    if not record:
        raise ValueError(f"{ckpt_path}: no experiment config stored (not a diffusion run)")
    exp = from_dict(DiffusionExperiment, record)
    pipe = build_pipeline(exp)
    state = ckpt["model"]
    ema = ckpt.get("ema")
    if use_ema == "auto":
        use_ema = bool(ema) and int(ckpt["step"]) * (1 - float(ema["decay"])) >= 5
    if use_ema and ema:
        state = ema["module"]
    pipe.load_state_dict(state)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    return pipe.to(device).eval(), exp, ckpt


def save_grid(images, path: str | Path, nrow: int) -> Path:
    """``images [N,3,H,W]`` in [-1,1] -> PNG grid with ``nrow`` images per row."""
    import numpy as np
    from PIL import Image

    x = ((images.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().byte()
    n, c, h, w = x.shape
    rows = math.ceil(n / nrow)
    grid = np.full((rows * (h + 2) + 2, nrow * (w + 2) + 2, 3), 255, dtype=np.uint8)
    for i in range(n):
        r, col = divmod(i, nrow)
        grid[2 + r * (h + 2):2 + r * (h + 2) + h, 2 + col * (w + 2):2 + col * (w + 2) + w] = \
            x[i].permute(1, 2, 0).numpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)
    return path


# ------------------------------------------------------------------------------- handlers
def run_train(args: argparse.Namespace) -> int:
    exp = load_experiment(args.config, args.overrides)
    trainer, history = train_experiment(exp)
    last = history[-1] if history else {}
    print(f"trained {exp.model.kind} for {trainer.step} steps, last loss "
          f"{last.get('loss', float('nan')):.4f}; checkpoint: {trainer.ckpt_path}")
    return 0


def parse_classes(spec: str, categories: list[str]) -> list[int]:
    if spec == "all":
        return list(range(len(categories)))
    out = []
    for item in spec.split(","):
        item = item.strip()
        if item.isdigit() and int(item) < len(categories):
            out.append(int(item))
        elif item in categories:
            out.append(categories.index(item))
        else:
            raise SystemExit(f"unknown class '{item}' (have {categories})")
    return out


def run_sample(args: argparse.Namespace) -> int:
    import time

    import torch

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    pipe, exp, _ = load_pipeline(args.ckpt, use_ema=False if args.no_ema else "auto",
                                 device=args.device)
    classes = parse_classes(args.classes, exp.data.categories)
    y = torch.tensor([c for c in classes for _ in range(args.n)], dtype=torch.long)
    g = torch.Generator().manual_seed(args.seed)
    extra = {"eta": args.eta} if args.eta is not None else {}
    t0 = time.time()
    imgs = pipe.generate(len(y), y=y, sampler=args.sampler, steps=args.steps,
                         cfg_scale=args.cfg, generator=g, progress=True, **extra)
    dt = time.time() - t0
    path = save_grid(imgs, args.out, nrow=args.n)
    print(f"# {len(y)} samples ({', '.join(exp.data.categories[c] for c in classes)}), "
          f"{args.sampler}-{args.steps}, cfg {args.cfg}: {dt / len(y):.3f} s/sample")
    print(path)
    return 0
