"""``neural3d sample METHOD CKPT --num 8 --out DIR``: sample objects, write a grid image and
turntable videos, print their paths."""

from __future__ import annotations

import argparse

SAMPLEABLE = ("ssdnerf",)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("sample", help="sample objects from a trained generative model",
                              description=__doc__)
    p.add_argument("method", help="ssdnerf")
    p.add_argument("ckpt", help="checkpoint (OUT/checkpoints/last.pt)")
    p.add_argument("--num", type=int, default=8)
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", choices=["ddim", "ode", "ddpm"], default=None,
                   help="default: the config's (ddim)")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--frames", type=int, default=36, help="turntable frames")
    p.add_argument("--res", type=int, default=0, help="render resolution (0 = training data's)")
    p.add_argument("--radius", type=float, default=1.3)
    p.add_argument("--elevation", type=float, default=20.0)
    p.add_argument("--fps", type=int, default=12)
    p.add_argument("--device", default="cpu")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    if args.method not in SAMPLEABLE:
        print(f"neural3d sample: unknown method {args.method!r} (available: "
              f"{', '.join(SAMPLEABLE)})", file=sys.stderr)
        return 2
    if not Path(args.ckpt).is_file():
        print(f"neural3d sample: checkpoint not found: {args.ckpt}", file=sys.stderr)
        return 2
    import torch

    from neural3d.cameras import Cameras, orbit_path
    from neural3d.export.media import write_image_rows, write_video
    from neural3d.methods.ssdnerf import load_ssdnerf

    loaded = load_ssdnerf(args.ckpt, args.device)
    model, cfg = loaded.model, loaded.cfg
    res = args.res or cfg.data.resolution or (cfg.data.toy_res if cfg.data.toy else 128)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    g = torch.Generator().manual_seed(args.seed)
    lat = model.sample(args.num, generator=g, steps=args.steps, sampler=args.sampler)
    torch.save(lat, out / "latents.pt")
    cams = Cameras.srn(orbit_path(args.frames, args.radius, args.elevation), res)
    grid_idx = torch.arange(0, args.frames, max(1, args.frames // 4))[:4]
    rows, videos = [], []
    for i in range(args.num):
        frames = model.render_views(lat[i:i + 1], cams).cpu()
        rows.append(frames[grid_idx])
        videos.append(write_video(out / f"turntable_{i:03d}.mp4", frames, args.fps))
    write_image_rows(out / "grid.png", rows)
    print(f"grid: {out / 'grid.png'}")
    for v in videos:
        print(f"video: {v}")
    return 0
