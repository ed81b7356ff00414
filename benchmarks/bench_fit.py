"""Single-object fitting benchmark: quality against time for each field.

Makes each object of ``--objects`` (``toy``: a textured toy car, ``neural3d.data.toy``; a scan
that a pip package ships, ``bunny``, ``bone``, ``face``, ``brain``: ``neural3d.data.mesh_views``,
needs the ``meshes`` extra; or a mesh file) as anti-aliased (``--supersample``) renders with
``--train-views`` random views on the upper hemisphere and ``--test-views`` views on the
SRN-style spiral, fits each field for at most ``--budget`` seconds of training, and prints per
object and field: held-out PSNR/SSIM at the end, seconds to reach 25 and 30 dB held-out
(evaluated every ``--eval-every`` steps, not counting evaluation time), steps, steps/s, and the
share of a training step spent marching, in the field, compositing and in backward (measured on
a few extra steps).

    python benchmarks/bench_fit.py --res 128 --budget 300            # the 5-minute target
    python benchmarks/bench_fit.py --res 64 --budget 150 --fields triplane
    python benchmarks/bench_fit.py --objects bunny,bone,face --fields triplane --threads 2

Not part of the test suite. Report the machine load (``uptime``) next to the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch


def make_object(res: int, train_views: int, test_views: int, seed: int = 0,
                supersample: int = 4, source: str = "toy"):
    """Train and test :class:`MultiViewObject` of ``source``: ``toy`` (toy car ``seed``), a
    shipped scan's name (:data:`neural3d.data.mesh_views.SAMPLE_MESHES`) or a mesh file."""
    from neural3d.data.core import MultiViewObject
    from neural3d.data.mesh_views import (
        SAMPLE_MESHES,
        load_mesh,
        load_sample_mesh,
        render_mesh_views,
    )
    from neural3d.data.toy import make_toy_object, render_toy_views, toy_cameras

    if source == "toy":
        obj = make_toy_object("cars", seed)

        def render(cams):
            return render_toy_views(obj, cams, supersample=supersample)
    else:
        mesh = load_sample_mesh(source) if source in SAMPLE_MESHES else load_mesh(source)

        def render(cams):
            return render_mesh_views(mesh, cams, supersample=supersample)
    tr_cams = toy_cameras("cars", train_views, res, "train", rng=seed + 1)
    te_cams = toy_cameras("cars", test_views, res, "test")
    name = "bench_car" if source == "toy" else f"bench_{Path(source).stem}"
    tr = MultiViewObject(images=render(tr_cams), cameras=tr_cams, object_id=name,
                         view_ids=[str(i) for i in range(train_views)])
    te = MultiViewObject(images=render(te_cams), cameras=te_cams, object_id=name,
                         view_ids=[str(i) for i in range(test_views)])
    return tr, te


def step_breakdown(cfg, train, steps: int = 8) -> dict[str, float]:
    """Share of a step in marching, field, compositing, backward (after a short warm-up)."""
    from neural3d.methods.fit import Fit

    built = Fit(cfg, "cpu", train, log=lambda *a: None).build()
    model, opt = built.modules["model"], built.optimizers["main"]
    o, d = train.cameras.pixel_rays()
    o, d = o.reshape(-1, 3), d.reshape(-1, 3)
    rgb = train.images.reshape(-1, 3)
    g = torch.Generator().manual_seed(0)
    tm: dict = {}
    back = total = 0.0
    for it in range(steps + 2):
        sel = torch.randint(0, o.shape[0], (cfg.rays,), generator=g)
        t0 = time.perf_counter()
        cur: dict = {}
        res = model.render_rays(o[sel], d[sel], torch.rand(cfg.rays, generator=g), timings=cur)
        loss = ((res["rgb"] - rgb[sel]) ** 2).mean()
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad()
        t3 = time.perf_counter()
        if it >= 2:  # skip warm-up (kernel load, allocator)
            for k in ("march", "field", "composite"):
                tm[k] = tm.get(k, 0.0) + cur[k]
            back += t2 - t1
            total += t3 - t0
    out = {k: tm[k] / total for k in ("march", "field", "composite")}
    out["backward"] = back / total
    out["other"] = 1 - sum(out.values())
    out["ms_per_step"] = 1000 * total / steps
    return out


def field_options(ap: argparse.ArgumentParser, items: list[str]) -> dict:
    """``["key=value", ...]`` (values parsed as YAML) -> ``{key: value}``."""
    import yaml

    opts = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            ap.error(f"--field-option needs KEY=VALUE, got {item!r}")
        opts[key] = yaml.safe_load(value)
    return opts


def fit_object(args, source: str) -> list[dict]:
    """Fit every field of ``args.fields`` to ``source``; one result row per field."""
    from neural3d.config import from_dict
    from neural3d.fields import FieldConfig
    from neural3d.methods.fit import Fit, FitConfig
    from neural3d.methods.training import train_method

    t = time.time()
    train, test = make_object(args.res, args.train_views, args.test_views,
                              supersample=args.supersample, source=source)
    print(f"data: {source}, {args.train_views} train + {args.test_views} spiral test views at "
          f"{args.res}x{args.res} ({args.supersample}x{args.supersample} supersampled) in "
          f"{time.time() - t:.1f} s; load average "
          f"{os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, torch threads "
          f"{torch.get_num_threads()}", flush=True)
    rows = []
    for name in [f for f in args.fields.split(",") if f]:
        field = from_dict(FieldConfig, {"kind": name, **args.field_option}, prefix="field")
        kw = {"field": field, "eval_every": args.eval_every,
              "turntable_frames": 0, "eval_views_max": 16, "progress": False,
              "out_dir": f"{args.out}/{Path(source).stem}/{name}"}
        if args.steps:
            kw["steps"] = args.steps
        cfg = FitConfig(**kw)
        load0 = os.getloadavg()[0]
        _, m = train_method(Fit(cfg, "cpu", train, test, log=lambda *a: None),
                            time_budget=args.budget, log=lambda *a: None)
        curve = m.get("curve", [])

        def reach(db, curve=curve):
            return next((c["seconds"] for c in curve if c["psnr"] >= db), None)

        br = step_breakdown(cfg, train)
        row = {"object": Path(source).stem, "field": name, "psnr": m["psnr"],
               "ssim": m["ssim"], "lpips": m["lpips"],
               "steps": m["steps"], "train_s": m["train_seconds"],
               "steps_per_s": m["steps"] / max(m["train_seconds"], 1e-9),
               "t25": reach(25.0), "t30": reach(30.0), "breakdown": br, "curve": curve,
               "load": [load0, os.getloadavg()[0]], "backend": m["backend"]}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--objects", default="toy",
                    help="comma list: toy, bunny, bone, face, brain (shipped scans) or mesh "
                         "files (.nii/.nii.gz volumes: isosurface)")
    ap.add_argument("--res", type=int, default=128)
    ap.add_argument("--train-views", type=int, default=50)
    ap.add_argument("--test-views", type=int, default=50)
    ap.add_argument("--fields", default="triplane,hashgrid,mlp")
    ap.add_argument("--budget", type=float, default=300.0, help="training seconds per field")
    ap.add_argument("--steps", type=int, default=None, help="step cap (default: FitConfig)")
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--supersample", type=int, default=4,
                    help="anti-aliasing of the renders (s x s rays per pixel; 1 = aliased)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = default)")
    ap.add_argument("--out", default="runs/bench_fit")
    ap.add_argument("--json", default=None, help="also write the results here")
    ap.add_argument("--field-option", action="append", default=[], metavar="KEY=VALUE",
                    help="a field config key for every field (YAML value), e.g. decoder=view_sh")
    args = ap.parse_args()
    args.field_option = field_options(ap, args.field_option)

    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for source in [o for o in args.objects.split(",") if o]:
        rows += fit_object(args, source)

    def f(v, fmt="{:.1f}"):
        return "-" if v is None else fmt.format(v)

    print(f"\nfit benchmark: {args.res}x{args.res}, {args.train_views} train / "
          f"{args.test_views} spiral test views, budget {args.budget:.0f} s per field")
    hdr = (f"{'object':8} {'field':9} {'PSNR':>6} {'SSIM':>6} {'steps':>6} {'train s':>8} "
           f"{'it/s':>5} {'t->25dB':>8} {'t->30dB':>8} | {'march':>5} {'field':>5} "
           f"{'comp':>5} {'bwd':>5} {'other':>5} {'ms/it':>6} | load")
    print(hdr)
    print("-" * len(hdr))
    for r in rows:
        b = r["breakdown"]
        print(f"{r['object']:8} {r['field']:9} {f(r['psnr'], '{:.2f}'):>6} "
              f"{f(r['ssim'], '{:.3f}'):>6} {r['steps']:>6} {r['train_s']:>8.0f} "
              f"{r['steps_per_s']:>5.1f} {f(r['t25']):>8} {f(r['t30']):>8} | "
              f"{b['march']:>5.0%} {b['field']:>5.0%} "
              f"{b['composite']:>5.0%} {b['backward']:>5.0%} {b['other']:>5.0%} "
              f"{b['ms_per_step']:>6.0f} | {r['load'][0]:.1f}-{r['load'][1]:.1f}")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
