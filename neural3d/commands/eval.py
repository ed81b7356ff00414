"""``neural3d eval nvs|generation``: the evaluation protocol (writes results.json/.md).

  neural3d eval nvs --method ssdnerf --ckpt CKPT --data DIR --split test --input-views 64 --out OUT
  neural3d eval generation --ckpt CKPT --data DIR --num N --out OUT
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="evaluate: novel-view synthesis, generation",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="task", metavar="TASK")
    for name, hlp in (("nvs", "reconstruct test objects from input views, score the others"),
                      ("generation", "FID/KID of sampled objects at test poses")):
        q = sub.add_parser(name, help=hlp)
        q.add_argument("--method", default="ssdnerf")
        q.add_argument("--ckpt", required=True)
        q.add_argument("--data", required=True, help="dataset root (holds <category>_<split>)")
        q.add_argument("--split", default="test")
        q.add_argument("--category", default=None, help="default: the checkpoint's")
        q.add_argument("--out", default=None, help="output folder (default: next to CKPT)")
        q.add_argument("--device", default="cpu")
        q.add_argument("--inception", default=None, help="Inception weights (TorchScript)")
        q.add_argument("--threads", type=int, default=0)
        if name == "nvs":
            q.add_argument("--input-views", default="64",
                           help="view index or comma-separated indices (SRN: 64 or 64,104)")
            q.add_argument("--max-objects", type=int, default=0)
            q.add_argument("--recon", default="guided_finetune",
                           choices=["guided_finetune", "guided", "finetune", "mean"])
            q.add_argument("--guidance-scale", type=float, default=None)
            q.add_argument("--guidance-wrt", default=None, choices=["x0", "xt"],
                           help="guidance on x0_hat or through the denoiser (default: the "
                                "checkpoint's recon.guidance_wrt)")
            q.add_argument("--finetune-steps", type=int, default=None)
            q.add_argument("--no-fid", action="store_true")
            q.add_argument("--lpips-net", default="vgg", choices=["vgg", "alex"])
        else:
            q.add_argument("--num", type=int, default=64)
            q.add_argument("--poses-per-sample", type=int, default=4)
            q.add_argument("--seed", type=int, default=0)
        q.set_defaults(func=run)
    p.set_defaults(func=lambda a: (p.print_help(), 1)[1])


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from neural3d.eval import EvalError, evaluate_generation, evaluate_nvs

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    out = args.out or str(Path(args.ckpt).resolve().parent.parent / f"eval_{args.task}")
    try:
        if args.task == "nvs":
            over = {k: v for k, v in (("guidance_scale", args.guidance_scale),
                                      ("guidance_wrt", args.guidance_wrt),
                                      ("finetune_steps", args.finetune_steps)) if v is not None}
            res = evaluate_nvs(args.method, args.ckpt, args.data, out, split=args.split,
                               input_views=args.input_views, category=args.category,
                               max_objects=args.max_objects or None, recon_mode=args.recon,
                               fid=not args.no_fid, lpips_net=args.lpips_net,
                               device=args.device, recon_overrides=over,
                               inception=args.inception, progress=True)
            m = res["mean"]
            print(f"PSNR {m['psnr']:.2f}  SSIM {m['ssim']:.4f}  LPIPS {m['lpips']}  "
                  f"FID {m.get('fid')}")
        else:
            res = evaluate_generation(args.method, args.ckpt, args.data, out, num=args.num,
                                      split=args.split, category=args.category,
                                      poses_per_sample=args.poses_per_sample, seed=args.seed,
                                      device=args.device, inception=args.inception,
                                      progress=True)
            print(f"FID {res['fid']}  KID {res.get('kid')}")
    except EvalError as exc:
        print(f"neural3d eval: {exc}", file=sys.stderr)
        return 2
    print(f"results: {res['paths']['json']}")
    print(f"table: {res['paths']['markdown']}")
    return 0
