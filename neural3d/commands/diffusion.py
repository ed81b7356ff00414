"""``neural3d diffusion train|sample``: shortcuts for the ``diffusion`` method.

::

    neural3d diffusion train --config configs/diffusion_toy_unet.yaml [key.sub=value ...]
        # = neural3d train diffusion --config ...
    neural3d diffusion sample RUN/checkpoints/last.pt --sampler ddim --steps 50 --cfg 3.0 \\
        --out grid.png
        # = neural3d sample diffusion CKPT --out DIR --filename grid.png ...

``train`` renders the toy categories (``data.categories``, label = index) once into
``data.root`` if they are missing, loads every training view at ``data.res`` as a
class-labelled image set in ``[-1, 1]`` and trains ``model.architecture`` (unet, dit, mdm, fdm,
kaleido, dart, cascade, latent) with the shared trainer (``latent`` trains its autoencoder for
``model.latent.ae_steps`` steps, then its latent diffusion model, in the same run).
``sample`` loads a checkpoint (EMA weights once warmed up), draws ``--n`` images per class with
classifier-free guidance ``--cfg`` (``uncond + w (cond - uncond)``; 1 = plain conditional) and
writes one row per class.
"""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("diffusion", help="2D diffusion models (U-Net, DiT, Matryoshka, "
                              "f-DM, Kaleido, DART, cascade, latent) on toy renders: train, "
                              "sample",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="diffusion_command", metavar="ACTION")
    t = sub.add_parser("train", help="= neural3d train diffusion", add_help=False)
    t.add_argument("rest", nargs=argparse.REMAINDER)
    t.set_defaults(func=run_train)
    s = sub.add_parser("sample", help="sample an image grid from a checkpoint")
    s.add_argument("ckpt", help="checkpoint written by 'diffusion train'")
    s.add_argument("--sampler", default=None,
                   choices=["ddpm", "ddim", "dpmpp2m", "ode", "dart"],
                   help="default: ddim (dart for model.architecture=dart)")
    s.add_argument("--steps", type=int, default=None,
                   help="model calls (default: 50; DART: model.dart.steps)")
    s.add_argument("--cfg", type=float, default=3.0,
                   help="classifier-free guidance weight w: uncond + w*(cond - uncond)")
    s.add_argument("--eta", type=float, default=None, help="DDIM eta (default 0)")
    s.add_argument("--aug-level", type=float, default=None,
                   help="cascade only: conditioning-augmentation level of the super-resolution "
                        "stage (default model.cascade.sample_aug)")
    s.add_argument("--n", type=int, default=8, help="images per class")
    s.add_argument("--classes", default="all",
                   help="comma-separated category names or indices, or 'all'")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-ema", action="store_true", help="use the raw (not EMA) weights "
                   "(default: EMA once step * (1 - decay) >= 5)")
    s.add_argument("--device", default="auto")
    s.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = auto)")
    s.add_argument("--out", default="grid.png", help="output PNG")
    s.set_defaults(func=run_sample)
    p.set_defaults(func=lambda a: p.print_help() or 1)


def run_train(args: argparse.Namespace) -> int:
    from neural3d.commands import train

    return train.run(argparse.Namespace(method="diffusion", rest=args.rest))


def run_sample(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neural3d.commands import sample

    out = Path(args.out)
    rest = [args.ckpt, "--out", str(out.parent), "--filename", out.name, "--num", str(args.n),
            "--seed", str(args.seed), "--cfg", str(args.cfg), "--classes", args.classes,
            "--device", args.device, "--threads", str(args.threads)]
    rest += ["--sampler", args.sampler] if args.sampler is not None else []
    rest += ["--steps", str(args.steps)] if args.steps is not None else []
    rest += ["--eta", str(args.eta)] if args.eta is not None else []
    rest += ["--aug-level", str(args.aug_level)] if args.aug_level is not None else []
    rest += ["--no-ema"] if args.no_ema else []
    return sample.run(argparse.Namespace(method="diffusion", rest=rest))
