"""3D-aware GAN benchmark on the toy cars: StyleNeRF-lite vs EG3D-lite vs NeRF-only at equal
wall-clock, the 3D consistency with and without the NeRF-path regulariser, on the generation
protocol SSDNeRF is scored with (``neural3d.eval.evaluate_generation``).

    # the issue's table (each row trains for --budget seconds of training time, one at a time,
    # on a quiet machine; 5 rows x 40 min):
    python benchmarks/bench_gan.py --budget 2400 --threads 1 \
        --ssdnerf outputs/runs/ssdnerf_toycars/checkpoints/last.pt
    # the same table from two processes, one per core (each row's result is stored in OUT and
    # reused by later runs with the same settings; the last run prints all rows):
    taskset -c 0 python benchmarks/bench_gan.py --rows stylenerf,nerf_only,untrained &
    taskset -c 1 python benchmarks/bench_gan.py --rows stylenerf_noreg,eg3d
    python benchmarks/bench_gan.py --rows stylenerf,stylenerf_noreg,nerf_only,eg3d,untrained \
        --ssdnerf outputs/runs/ssdnerf_toycars/checkpoints/last.pt
    # seconds-scale check of the whole pipeline (tiny sizes, 3 s of training per row, no FID):
    python benchmarks/bench_gan.py --smoke

Rows: ``stylenerf`` (configs/stylenerf_toycars.yaml), ``stylenerf_noreg`` (the same with
``generator.nerf_path_weight=0``), ``nerf_only`` (``generator.upsampler=bilinear``: same mapping
and NeRF, the NeRF's RGB bilinearly upsampled), ``eg3d`` (configs/eg3d_toycars.yaml),
``untrained`` (StyleNeRF at step 0) and, with ``--ssdnerf CKPT``, the toy SSDNeRF. Columns: FID,
KID (``--num`` samples x ``--poses`` test poses vs the test split), the 3D-consistency PSNR
(final image vs the NeRF path at a 16 x 16 grid, mean over 64 prior samples), steps trained,
seconds; sample grids, depth and turntables under OUT/<row>/samples. Targets checked:
KID(stylenerf) <= 0.75 KID(nerf_only); consistency(stylenerf) >= consistency(noreg) + 3 dB with
KID within 20 %.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

ROWS = {
    "stylenerf": ("configs/stylenerf_toycars.yaml", []),
    "stylenerf_noreg": ("configs/stylenerf_toycars.yaml", ["generator.nerf_path_weight=0"]),
    "nerf_only": ("configs/stylenerf_toycars.yaml", ["generator.upsampler=bilinear"]),
    "eg3d": ("configs/eg3d_toycars.yaml", []),
    "untrained": ("configs/stylenerf_toycars.yaml", []),
}
#: the sizes of --smoke (valid for both generator kinds)
SMOKE = ["data.toy_objects=4", "data.toy_views=4", "data.toy_test_objects=2",
         "data.toy_test_views=4", "data.toy_res=16", "generator.output_res=16",
         "generator.render_res=8", "generator.n_samples=4", "generator.n_importance=2",
         "mapping.z_dim=8", "mapping.w_dim=8", "mapping.layers=1", "discriminator.channel_max=8",
         "optim.batch=4"]
SMOKE_KIND = {"stylenerf": ["generator.nerf_hidden=8", "generator.nerf_layers=1",
                            "generator.features=4", "generator.channels=[8]",
                            "generator.n_freqs=2", "generator.nerf_path_pixels=4",
                            "progressive.start=0", "progressive.end=2"],
              "eg3d": ["generator.plane_res=8", "generator.plane_channels=4",
                       "generator.backbone_channels=8", "generator.decoder_hidden=8",
                       "generator.features=4", "generator.sr_channels=8"]}


def train_row(name: str, out: Path, budget: float, smoke: bool, data_root: str | None, log):
    from neural3d.config import load_config
    from neural3d.methods import train_method
    from neural3d.methods.stylenerf.config import StyleNeRFConfig
    from neural3d.methods.stylenerf.method import StyleNeRF

    path, extra = ROWS[name]
    over = list(extra) + [f"train.out_dir={out / name}", "train.progress=false",
                          "train.resume="]
    if data_root:
        over.append(f"data.root={data_root}")
    if smoke:
        kind = "eg3d" if "eg3d" in path else "stylenerf"
        over += SMOKE + SMOKE_KIND[kind] + ["train.tensorboard=false", "train.ckpt_every=0"]
    cfg = load_config(StyleNeRFConfig, path, over)
    done = finished_run(out / name, cfg, 0.0 if name == "untrained" else budget)
    if done is not None:
        log(f"{name}: training finished before, evaluating {done[0]}")
        return (*done, cfg)
    method = StyleNeRF(cfg)
    trainer, _ = train_method(method, steps=0 if name == "untrained" else None,
                              time_budget=None if name == "untrained" else budget, log=log)
    return trainer.ckpt_path, trainer.step, method.train_seconds, cfg


def finished_run(run_dir: Path, cfg, budget: float):
    """``(checkpoint, steps, seconds)`` of a run in ``run_dir`` that finished its ``budget``
    with this very config (so a row whose evaluation was interrupted is evaluated, not
    retrained), else None."""
    import yaml

    from neural3d.config import to_dict

    info, ckpt, saved = (run_dir / "run.json", run_dir / "checkpoints" / "last.pt",
                         run_dir / "config.yaml")
    if not (info.is_file() and ckpt.is_file() and saved.is_file()):
        return None
    run = json.loads(info.read_text())
    if run.get("status") != "finished" or run.get("seconds", 0.0) < budget:
        return None
    if yaml.safe_load(saved.read_text()) != to_dict(cfg):
        raise SystemExit(f"{run_dir}: holds a finished run of another config; choose another "
                         "--out")
    return ckpt, int(run["step"]), float(run["seconds"])


def _fmt(value, digits: int, scale: float = 1.0) -> str:
    """A table cell: ``value * scale`` with ``digits`` decimals, ``n/a`` when missing."""
    return "n/a" if value is None else f"{value * scale:.{digits}f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--budget", type=float, default=2400.0, help="training seconds per row")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--ssdnerf", default=None, help="a toy SSDNeRF checkpoint for its row")
    ap.add_argument("--num", type=int, default=64, help="samples for FID/KID and consistency")
    ap.add_argument("--poses", type=int, default=4, help="test poses per sample")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="outputs/bench_gan")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, 3 s per row")
    args = ap.parse_args()

    import torch

    from neural3d.eval import evaluate_generation
    from neural3d.export.media import write_labelled
    from neural3d.methods import load

    torch.set_num_threads(args.threads)
    out = Path(tempfile.mkdtemp(prefix="bench_gan_")) if args.smoke else Path(args.out)
    budget = 3.0 if args.smoke else args.budget
    num = 4 if args.smoke else args.num
    poses = 1 if args.smoke else args.poses
    data_root = str(out / "data") if args.smoke else None
    # --smoke checks the protocol, not the metric: a missing Inception file makes FID/KID None
    results: dict[str, dict] = {}
    settings = {"budget": budget, "num": num, "poses": poses, "threads": args.threads,
                "smoke": args.smoke}
    for name in args.rows.split(","):
        stored = out / name / "result.json"
        if stored.is_file():
            prev = json.loads(stored.read_text())
            if prev["settings"] != settings:
                raise SystemExit(f"{stored}: measured with other settings ({prev['settings']});"
                                 f" choose another --out")
            results[name] = prev["result"]
            print(name, "measured before:", stored, flush=True)
            continue
        ckpt, steps, seconds, cfg = train_row(name, out, budget, args.smoke, data_root,
                                              log=lambda *_: None)
        m = load(ckpt)
        ev = evaluate_generation(None, ckpt, cfg.data.root, out / name / "eval", num=num,
                                 poses_per_sample=poses, fid=not args.smoke)
        samples = m.write_samples(out / name / "samples", min(num, 8), frames=8 if args.smoke
                                  else 36)
        results[name] = {"fid": ev["fid"], "kid": ev["kid"], "steps": steps,
                         "seconds": round(seconds, 1),
                         "consistency_psnr": m.consistency_psnr(num, pixels=4 if args.smoke
                                                                else 16),
                         "samples": [str(p) for p in samples[:2]]}
        stored.write_text(json.dumps({"settings": settings, "result": results[name]},
                                     indent=2, default=str) + "\n")
        print(name, json.dumps(results[name]), flush=True)
    if args.ssdnerf:
        ev = evaluate_generation("ssdnerf", args.ssdnerf, data_root or "outputs/data/toy_ssdnerf",
                                 out / "ssdnerf" / "eval", num=num, poses_per_sample=poses,
                                 fid=not args.smoke)
        results["ssdnerf"] = {"fid": ev["fid"], "kid": ev["kid"]}
    targets = {}
    r = results
    if {"stylenerf", "nerf_only"} <= set(r) and r["stylenerf"]["kid"] is not None:
        targets["kid_vs_nerf_only"] = r["stylenerf"]["kid"] <= 0.75 * r["nerf_only"]["kid"]
    if {"stylenerf", "stylenerf_noreg"} <= set(r) and r["stylenerf"]["kid"] is not None:
        gain = r["stylenerf"]["consistency_psnr"] - r["stylenerf_noreg"]["consistency_psnr"]
        targets["consistency_gain_db"] = gain
        targets["consistency_target"] = gain >= 3 and \
            abs(r["stylenerf"]["kid"] - r["stylenerf_noreg"]["kid"]) <= 0.2 * abs(
                r["stylenerf_noreg"]["kid"])
    md = ["| model | FID | KID x10^3 | 3D consistency PSNR (dB) | steps | seconds |",
          "|---|---|---|---|---|---|"]
    for k, v in r.items():
        md.append(f"| {k} | {_fmt(v['fid'], 1)} | {_fmt(v['kid'], 2, 1e3)} | "
                  f"{_fmt(v.get('consistency_psnr'), 2)} | {_fmt(v.get('steps'), 0)} | "
                  f"{_fmt(v.get('seconds'), 0)} |")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"rows": r, "targets": targets,
                                                  "budget_s": budget, "smoke": args.smoke},
                                                 indent=2, default=str) + "\n")
    (out / "results.md").write_text("\n".join(md) + "\n")
    grids = [(k, Path(v["samples"][0])) for k, v in r.items() if v.get("samples")]
    if grids:
        print(f"sample grids: {write_labelled(out / 'grids.png', grids, across=True)}")
    print("\n".join(md))
    print("targets:", json.dumps(targets))
    print(f"results: {out / 'results.json'}")


if __name__ == "__main__":
    main()
