"""SSDNeRF quality benchmark on the toy cars: generation FID/KID and single-view reconstruction.

    # train both runs first (each ~10-15 min on 2 busy CPU cores, one at a time):
    neural3d train ssdnerf --config configs/ssdnerf_toycars.yaml --threads 1 \
        train.out_dir=outputs/runs/ssd_single
    neural3d train ssdnerf --config configs/ssdnerf_toycars.yaml --threads 1 \
        train.out_dir=outputs/runs/ssd_two optim.mode=two_stage optim.stage1_steps=2000
    python benchmarks/bench_ssdnerf.py --single outputs/runs/ssd_single/checkpoints/last.pt \
        --two-stage outputs/runs/ssd_two/checkpoints/last.pt

    # our defaults beside the reference code's details (configs/ssdnerf_toycars_reference.yaml)
    neural3d train ssdnerf --config configs/ssdnerf_toycars_reference.yaml --threads 1
    python benchmarks/bench_ssdnerf.py --single outputs/runs/ssd_single/checkpoints/last.pt \
        --reference outputs/runs/ssdnerf_toycars_reference/checkpoints/last.pt

Generation: ``num`` samples per pipeline, each rendered at ``poses`` poses of a test object
(cycled), FID/KID against all test images (Inception-v3, StyleGAN2-ADA preprocessing). Rows:
SSDNeRF single-stage, the reference-details run (``--reference``), the two-stage baseline, and
the same pipeline (single-stage decoder and
renderer) fed untrained random latents: Gaussian with the training latents' per-element mean and
std (``random_matched``) and the untrained initialisation, i.e. zeros + N(0, 0.1) noise
(``random_init``).
Reconstruction (single-stage and reference runs): every test object from one input view
(``--view``), PSNR and SSIM (scikit-image's default uniform window, and the Gaussian variant) of
all other views rounded to 8 bits, for: the mean training latent, fine-tuning alone (from the
mean latent, with the prior), guided sampling alone, guided sampling + fine-tuning (SSDNeRF).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch


def render_samples(model, latents, objs, poses):
    out = []
    for i in range(latents.shape[0]):
        obj = objs[i % len(objs)]
        sel = torch.linspace(0, len(obj) - 1, poses).round().long()
        out.append(model.render_views(latents[i:i + 1], obj.cameras[sel]).cpu())
    return torch.cat(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--single", required=True)
    ap.add_argument("--two-stage", default=None)
    ap.add_argument("--reference", default=None,
                    help="a run of configs/ssdnerf_toycars_reference.yaml (the reference "
                         "code's details), scored beside --single")
    ap.add_argument("--data", default=None, help="default: the checkpoint's data.root")
    ap.add_argument("--num", type=int, default=64)
    ap.add_argument("--poses", type=int, default=4)
    ap.add_argument("--view", type=int, default=13, help="input view (toy test spiral)")
    ap.add_argument("--max-objects", type=int, default=0)
    ap.add_argument("--skip-recon", action="store_true")
    ap.add_argument("--skip-gen", action="store_true")
    ap.add_argument("--modes", default="mean,finetune,guided,guided_finetune")
    ap.add_argument("--guidance-scale", type=float, default=None)
    ap.add_argument("--guidance-wrt", choices=["x0", "xt"], default=None)
    ap.add_argument("--prior-weight", type=float, default=None,
                    help="fine-tuning prior weight (x c_diff)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="outputs/bench_ssdnerf.json")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from neural3d.data import SRNCategory
    from neural3d.methods.ssdnerf import load_ssdnerf, reconstruct
    from neural3d.metrics import InceptionFeatures, fid_from_features, kid_from_features, psnr
    from neural3d.metrics import ssim as ssim_fn

    runs = {"single-stage": load_ssdnerf(args.single)}
    if args.reference:
        runs["reference"] = load_ssdnerf(args.reference)
    if args.two_stage:
        runs["two-stage"] = load_ssdnerf(args.two_stage)
    single = runs["single-stage"]
    data = Path(args.data or single.cfg.data.root)
    ds = SRNCategory(data, single.cfg.data.category, "test")
    objs = ds.load(args.max_objects or None)
    reals = torch.cat([o.images for o in objs])
    results: dict = {"data": str(data), "test_objects": len(objs), "test_images": len(reals),
                     "steps": {k: r.checkpoint_step for k, r in runs.items()}, "generation": {},
                     "reconstruction": {}}

    if not args.skip_gen:
        ext = InceptionFeatures()
        f_real = ext(reals)
        g = torch.Generator().manual_seed(0)
        pipelines = {}
        for name, r in runs.items():
            t0 = time.time()
            lat = torch.cat([r.model.sample(min(16, args.num - i), generator=g)
                             for i in range(0, args.num, 16)])
            pipelines[name] = (r.model, lat, time.time() - t0)
        lat_t = single.latents
        mu, sd = lat_t.mean(0, keepdim=True), lat_t.std(0, keepdim=True)
        shape = (args.num, *lat_t.shape[1:])
        pipelines["random_matched"] = (single.model, mu + sd * torch.randn(shape, generator=g), 0)
        pipelines["random_init"] = (single.model, 0.1 * torch.randn(shape, generator=g), 0)
        for name, (model, lat, t_sample) in pipelines.items():
            imgs = render_samples(model, lat, objs, args.poses)
            f = ext(imgs)
            results["generation"][name] = {
                "fid": fid_from_features(f, f_real), "kid": kid_from_features(f, f_real),
                "images": len(imgs), "sample_seconds": round(t_sample, 1)}
            print(f"[gen] {name}: {results['generation'][name]}", flush=True)
            from neural3d.export.media import write_image_rows

            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            grid = write_image_rows(Path(args.out).with_name(f"bench_ssdnerf_{name}.png"),
                                    [imgs[i * args.poses:(i + 1) * args.poses]
                                     for i in range(min(8, args.num))])
            print(f"[gen] {name}: sample grid {grid}", flush=True)

    if not args.skip_recon:
        import dataclasses

        from neural3d.metrics.image import to_8bit

        over = {k: v for k, v in (("guidance_scale", args.guidance_scale),
                                  ("guidance_wrt", args.guidance_wrt),
                                  ("finetune_prior_weight", args.prior_weight)) if v is not None}
        for run_name, run in runs.items():
            if run_name == "two-stage":
                continue
            model = run.model
            rc = dataclasses.replace(run.cfg.recon, **over)
            results.setdefault("recon_config", {})[run_name] = dataclasses.asdict(rc)
            init = run.mean_latent
            for mode in args.modes.split(","):
                t0 = time.time()
                ps, ss, sg = [], [], []
                for obj in objs:
                    if args.view >= len(obj):
                        raise SystemExit(f"--view {args.view} out of range ({len(obj)} views)")
                    rest = [i for i in range(len(obj)) if i != args.view]
                    obs, tgt = obj.select([args.view]), obj.select(rest)
                    lat = reconstruct(model, obs.images, obs.cameras, rc, mode=mode, init=init)
                    pred = to_8bit(model.render_views(lat, tgt.cameras).cpu())
                    real = to_8bit(tgt.images)
                    ps.append(float(psnr(pred, real)))
                    ss.append(float(ssim_fn(pred, real)))
                    sg.append(float(ssim_fn(pred, real, variant="gaussian")))
                row = f"{run_name} {mode}" if len(runs) > 1 else mode
                results["reconstruction"][row] = {
                    "psnr": sum(ps) / len(ps), "ssim": sum(ss) / len(ss),
                    "ssim_gaussian": sum(sg) / len(sg),
                    "seconds_per_object": (time.time() - t0) / len(objs)}
                print(f"[recon] {row}: {results['reconstruction'][row]}", flush=True)

    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2))
    print(f"\n## SSDNeRF toy cars ({len(objs)} test objects, {len(reals)} test images)\n")
    if results["generation"]:
        print("| generation pipeline | FID | KID | images |\n|---|---|---|---|")
        for k, v in results["generation"].items():
            print(f"| {k} | {v['fid']:.2f} | {v['kid']:.4f} | {v['images']} |")
    if results["reconstruction"]:
        print(f"\n| 1-view reconstruction (view {args.view}) | PSNR | SSIM | SSIM (Gaussian) | "
              "s/object |\n|---|---|---|---|---|")
        for k, v in results["reconstruction"].items():
            print(f"| {k} | {v['psnr']:.2f} | {v['ssim']:.4f} | {v['ssim_gaussian']:.4f} | "
                  f"{v['seconds_per_object']:.1f} |")
    print(f"\nwritten: {args.out}")


if __name__ == "__main__":
    main()
