"""NerfDiff benchmark on the toy cars (64 px): one single-view table for NerfDiff's modes, the
pixelNeRF-lite baseline and SSDNeRF, on the same test objects and protocol.

    # train (each pinned to one core; see the configs' comments for the cost): the NeRF and
    # pixelNeRF-lite for the same seconds, side by side, then the CDM on the frozen NeRF
    neural3d train nerfdiff --config configs/nerfdiff_toycars.yaml --threads 1 \\
        train.time_budget=SECONDS cdm.start_step=100000 train.steps=100000
    neural3d train pixelnerf --config configs/pixelnerf_toycars.yaml --threads 1 \\
        train.time_budget=SECONDS
    cp outputs/runs/nerfdiff_toycars/checkpoints/last.pt outputs/runs/nerfdiff_nerf_only.pt
    neural3d train nerfdiff --config configs/nerfdiff_toycars.yaml --threads 1 \\
        train.time_budget=CDM_SECONDS cdm.start_step=STEP_REACHED train.steps=200000
    # (resumes the run at the step the NeRF reached, run.json's "step"; the NeRF is frozen
    # from cdm.start_step on, so the copy's NeRF is the final one's)
    neural3d train ssdnerf --config configs/ssdnerf_toycars.yaml --threads 1 \\
        data.root=outputs/data/toy_nerfdiff data.toy_res=64 data.toy_objects=64 \\
        train.out_dir=outputs/runs/nd_ssdnerf
    # evaluate (rows can run in separate processes with --rows; the table is assembled from the
    # rows found in --out):
    python benchmarks/bench_nerfdiff.py \\
        --nerfdiff outputs/runs/nerfdiff_toycars/checkpoints/last.pt \\
        --pixelnerf outputs/runs/pixelnerf_toycars/checkpoints/last.pt \\
        --ssdnerf outputs/runs/nd_ssdnerf/checkpoints/last.pt

Protocol (``neural3d eval nvs``): every test object reconstructed from view ``--input-view``
(13 of the toy's 50-view test spiral, as SRN's 64 of 251), every other view rendered and
scored (PSNR, SSIM, LPIPS when its weights are available offline; per-object means), FID between
all renders and all test images. Rows: ``pixelnerf``; NerfDiff's ``nerf`` (the single-image
NeRF), ``cdm`` (per-view CDM samples), ``naive`` (distil independent samples), ``sds``,
``ngd``; ``ssdnerf`` (its default guided reconstruction). Also writes ``grid.png``: input,
NeRF, NGD and ground truth of four objects at two views.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

NERFDIFF_MODES = ("nerf", "cdm", "naive", "sds", "ngd")
ROWS = ("pixelnerf", *NERFDIFF_MODES, "ssdnerf")


def run_row(row: str, ckpt: str, args) -> dict:
    from neural3d.eval import evaluate_nvs

    opts = {"mode": row} if row in NERFDIFF_MODES else {}
    method = "nerfdiff" if row in NERFDIFF_MODES else row
    t = time.perf_counter()
    res = evaluate_nvs(method, ckpt, args.data, Path(args.out) / row,
                       input_views=str(args.input_view), max_objects=args.objects or None,
                       recon_options=opts, progress=True, fid=not args.no_fid)
    res["seconds_per_object"] = (time.perf_counter() - t) / res["num_objects"]
    (Path(args.out) / row / "timing.json").write_text(
        json.dumps({"seconds_per_object": res["seconds_per_object"]}))
    return res


def picture(ckpt: str, args) -> Path:
    """Rows: input | NeRF | NGD | ground truth at two views, for four test objects."""
    from neural3d.data import SRNCategory
    from neural3d.export.media import write_image_rows
    from neural3d.methods import load

    method = load(ckpt)
    ds = SRNCategory(args.data, method.category, "test")
    rows = []
    for oid in ds.object_ids[:4]:
        obj = ds.read(oid)
        v = args.input_view
        show = torch.tensor([(v + len(obj) // 3) % len(obj), (v + 2 * len(obj) // 3) % len(obj)])
        inp = obj.images[v:v + 1]
        nerf = method.reconstruct(inp, obj.cameras[v], mode="nerf")
        ngd = method.reconstruct(inp, obj.cameras[v], mode="ngd")
        cams = obj.cameras[show]
        rows.append(torch.cat([inp, method.render(nerf, cams), method.render(ngd, cams),
                               obj.images[show]]))
    return write_image_rows(Path(args.out) / "grid.png", rows)


def table(out: Path) -> str:
    found = {}
    for row in ROWS:
        f = out / row / "results.json"
        if f.is_file():
            found[row] = json.loads(f.read_text())
            timing = out / row / "timing.json"
            if timing.is_file():
                found[row].update(json.loads(timing.read_text()))
    lines = ["| row | PSNR | SSIM | LPIPS | FID | s/object |", "|---|---|---|---|---|---|"]

    def fmt(x, p):
        return "n/a" if x is None else f"{x:.{p}f}"

    for row, r in found.items():
        m = r["mean"]
        lines.append(f"| {row} | {fmt(m['psnr'], 2)} | {fmt(m['ssim'], 4)} | "
                     f"{fmt(m.get('lpips'), 4)} | {fmt(m.get('fid'), 1)} | "
                     f"{fmt(r.get('seconds_per_object'), 1)} |")
    checks = []

    def get(row, key):
        return found.get(row, {}).get("mean", {}).get(key)

    if get("nerf", "psnr") is not None and get("pixelnerf", "psnr") is not None:
        d = get("nerf", "psnr") - get("pixelnerf", "psnr")
        checks.append(f"NeRF - pixelNeRF-lite PSNR: {d:+.2f} dB (target >= -0.2)")
    if get("ngd", "fid") is not None and get("nerf", "fid") is not None:
        red = 1 - get("ngd", "fid") / get("nerf", "fid")
        checks.append(f"NGD FID vs NeRF: {100 * red:.1f} % lower (target >= 40 %)")
        checks.append(f"NGD - NeRF PSNR: {get('ngd', 'psnr') - get('nerf', 'psnr'):+.2f} dB "
                      f"(target >= -0.3)")
    if get("ngd", "psnr") is not None and get("naive", "psnr") is not None:
        checks.append(f"NGD - naive PSNR: {get('ngd', 'psnr') - get('naive', 'psnr'):+.2f} dB "
                      f"(target >= +0.5)")
    if get("ngd", "fid") is not None and get("sds", "fid") is not None:
        checks.append(f"NGD FID {get('ngd', 'fid'):.1f} vs SDS {get('sds', 'fid'):.1f} "
                      f"(target: below)")
    return "\n".join(lines + [""] + [f"- {c}" for c in checks])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nerfdiff", default=None)
    ap.add_argument("--pixelnerf", default=None)
    ap.add_argument("--ssdnerf", default=None)
    ap.add_argument("--data", default="outputs/data/toy_nerfdiff")
    ap.add_argument("--input-view", type=int, default=13)
    ap.add_argument("--objects", type=int, default=0, help="0 = all test objects")
    ap.add_argument("--rows", default=",".join(ROWS), help=f"subset of {','.join(ROWS)}")
    ap.add_argument("--no-fid", action="store_true")
    ap.add_argument("--no-picture", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="outputs/bench_nerfdiff")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ckpts = {"pixelnerf": args.pixelnerf, "ssdnerf": args.ssdnerf,
             **{m: args.nerfdiff for m in NERFDIFF_MODES}}
    rows = [r.strip() for r in args.rows.split(",") if r.strip()]
    for row in rows:
        if row not in ROWS:
            ap.error(f"unknown row {row!r} (rows: {', '.join(ROWS)})")
        if ckpts[row] is None:
            print(f"[skip] {row}: no checkpoint given")
            continue
        res = run_row(row, ckpts[row], args)
        print(f"{row}: PSNR {res['mean']['psnr']:.2f}  FID {res['mean'].get('fid')}  "
              f"{res['seconds_per_object']:.1f} s/object", flush=True)
    if args.nerfdiff and not args.no_picture and "ngd" in rows:
        print(f"picture: {picture(args.nerfdiff, args)}")
    text = table(out)
    (out / "table.md").write_text(text + "\n")
    print(text)
    print(f"table: {out / 'table.md'}")


if __name__ == "__main__":
    main()
