"""``neural3d eval nvs|generation``: the evaluation protocol (writes results.json/.md).

  neural3d eval nvs --ckpt CKPT --data DIR --split test --input-views 64 --out OUT
  neural3d eval generation --ckpt CKPT --data DIR --num N --out OUT
  neural3d eval inception-stats --data DIR --split test --out STATS.npz

``eval nvs`` appends each object to OUT/objects.jsonl as it finishes; ``--resume`` skips those
already there, ``--shard i/N`` evaluates objects i::N (run N of them, same --out; the last to
finish writes the summary). ``inception-stats`` caches a split's reference Inception statistics
for ``--reference-stats``.

The method is read from the checkpoint (``--method`` checks it); ``--method M --help`` lists the
method's own options (SSDNeRF: ``--recon``, ``--guidance-scale``, ...).
"""

from __future__ import annotations

import argparse

from neural3d.commands._common import add_runtime_args, check_options, setup_runtime

TASKS = {"nvs": ("reconstruct test objects from input views, score the others",
                 ("reconstruct", "render")),
         "generation": ("FID/KID of sampled objects at test poses", ("sample", "render")),
         "inception-stats": ("reference Inception statistics of a split, cached to a file", ())}


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("eval", help="evaluate: novel-view synthesis, generation",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="task", metavar="TASK")
    for name, (hlp, _) in TASKS.items():
        q = sub.add_parser(name, help=hlp, add_help=False)
        q.add_argument("rest", nargs=argparse.REMAINDER)
        q.set_defaults(func=run)
    p.set_defaults(func=lambda a: (p.print_help(), 1)[1])


def task_parser(task: str, method_cls=None) -> argparse.ArgumentParser:
    """The options of ``eval TASK`` (plus the method's own when its class is known)."""
    q = argparse.ArgumentParser(prog=f"neural3d eval {task}", description=TASKS[task][0])
    if task == "inception-stats":
        q.add_argument("--data", required=True, help="dataset root (holds <category>_<split>)")
        q.add_argument("--split", default="test")
        q.add_argument("--category", default=None, help="default: the only one under --data")
        q.add_argument("--out", required=True, help="statistics file (.npz)")
        q.add_argument("--inception", default=None, help="Inception weights (TorchScript)")
        add_runtime_args(q)
        return q
    q.add_argument("--method", default=None, help="checked against the checkpoint's method")
    q.add_argument("--ckpt", required=True)
    q.add_argument("--data", required=True, help="dataset root (holds <category>_<split>)")
    q.add_argument("--split", default="test")
    q.add_argument("--category", default=None, help="default: the checkpoint's")
    q.add_argument("--out", default=None, help="output folder (default: next to CKPT)")
    q.add_argument("--inception", default=None, help="Inception weights (TorchScript)")
    q.add_argument("--reference-stats", default=None, metavar="NPZ",
                   help="FID reference statistics (from `neural3d eval inception-stats`)")
    add_runtime_args(q)
    if task == "nvs":
        q.add_argument("--input-views", default="64",
                       help="view index or comma-separated indices (SRN: 64 or 64,104)")
        q.add_argument("--max-objects", type=int, default=0)
        q.add_argument("--no-fid", action="store_true")
        q.add_argument("--resume", action="store_true",
                       help="skip the objects already in OUT's objects JSONL")
        q.add_argument("--shard", default=None, metavar="I/N",
                       help="evaluate objects I::N (0-based); the last shard merges")
        q.add_argument("--lpips-net", default="vgg", choices=["vgg", "alex"])
    else:
        q.add_argument("--num", type=int, default=64)
        q.add_argument("--poses-per-sample", type=int, default=4, help="0: all poses")
        q.add_argument("--preset", default=None, choices=["paper"],
                       help="paper: one sample per test object at all its poses (SSDNeRF)")
        q.add_argument("--seed", type=int, default=0)
    if method_cls is not None:
        method_cls.add_arguments(f"eval {task}", q)
    return q


def _method_class(rest: list[str]):
    """The method class named by ``--method`` or by the ``--ckpt``'s record (None if neither
    is readable yet: the full parse then reports what is missing)."""
    from neural3d.methods.registry import get_method, method_of
    from neural3d.train import load_checkpoint

    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--method")
    pre.add_argument("--ckpt")
    known, _ = pre.parse_known_args(rest)
    if known.method:
        return get_method(known.method)
    if known.ckpt:
        from pathlib import Path

        if Path(known.ckpt).is_file():
            return get_method(method_of(load_checkpoint(known.ckpt), known.ckpt))
    return None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neural3d.config import at_least
    from neural3d.eval import evaluate_generation, evaluate_nvs, write_reference_stats

    if args.task == "inception-stats":
        opts = task_parser(args.task).parse_args(args.rest)
        res = write_reference_stats(opts.data, opts.out, split=opts.split,
                                    category=opts.category, inception=opts.inception,
                                    device=str(setup_runtime(opts)), progress=True)
        print(f"{res['images']} images of {res['objects']} objects: {res['path']}")
        return 0
    cls = _method_class(args.rest)
    opts = task_parser(args.task, cls).parse_args(args.rest)
    check_options(opts, max_objects=at_least(0), num=at_least(1),
                  poses_per_sample=at_least(0), finetune_steps=at_least(0),
                  guidance_scale=at_least(0))
    device = setup_runtime(opts)
    out = opts.out or str(Path(opts.ckpt).resolve().parent.parent / f"eval_{args.task}")
    generic = set(vars(task_parser(args.task).parse_args(
        ["--ckpt", "x", "--data", "x"])))
    method_opts = {k: v for k, v in vars(opts).items() if k not in generic and v is not None}
    if args.task == "nvs":
        res = evaluate_nvs(opts.method, opts.ckpt, opts.data, out, split=opts.split,
                           input_views=opts.input_views, category=opts.category,
                           max_objects=opts.max_objects or None, fid=not opts.no_fid,
                           lpips_net=opts.lpips_net, device=str(device),
                           recon_options=method_opts, inception=opts.inception, progress=True,
                           resume=opts.resume, shard=opts.shard,
                           reference_stats=opts.reference_stats)
        if not res["complete"]:
            print(f"shard {opts.shard} done; {res['shards_complete']} of {res['shards']} shards "
                  f"complete (the last one writes the summary to {out})")
            return 0
        m = res["mean"]
        print(f"PSNR {m['psnr']:.2f}  SSIM {m['ssim']:.4f} (Gaussian {m['ssim_gaussian']:.4f})"
              f"  LPIPS {m['lpips']}  "
              f"FID {m.get('fid')}")
    else:
        res = evaluate_generation(opts.method, opts.ckpt, opts.data, out, num=opts.num,
                                  split=opts.split, category=opts.category,
                                  poses_per_sample=opts.poses_per_sample, seed=opts.seed,
                                  device=str(device), inception=opts.inception, progress=True,
                                  sample_options=method_opts,
                                  reference_stats=opts.reference_stats, preset=opts.preset)
        print(f"FID {res['fid']}  KID x1e3 {res.get('kid_x1e3')}")
    print(f"results: {res['paths']['json']}")
    print(f"table: {res['paths']['markdown']}")
    return 0
