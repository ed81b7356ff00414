"""``neural3d data``: write the built-in toy category, check a dataset against the expected
counts (``data check``), preview a dataset, export a dataset as nerfstudio/Blender
``transforms.json`` scenes."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("data", help="datasets: write the built-in toy category, preview")
    sub = p.add_subparsers(dest="data_command", metavar="DATA_COMMAND")

    t = sub.add_parser("toy", help="write the procedural toy category (cars/chairs) in SRN "
                       "layout: DIR/<category>_train, DIR/<category>_test")
    t.add_argument("--category", choices=("cars", "chairs"), default="cars")
    t.add_argument("--objects", type=int, default=64, help="training objects (default 64)")
    t.add_argument("--views", type=int, default=50, help="views per training object (50)")
    t.add_argument("--test-objects", type=int, default=None,
                   help="test objects, disjoint from training (default objects // 8, at least 1)")
    t.add_argument("--test-views", type=int, default=251,
                   help="views per test object on the SRN-style spiral (251, as SRN; 0: none)")
    t.add_argument("--res", type=int, default=64, help="image size in pixels (64)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--supersample", type=int, default=1,
                   help="s x s rays per pixel for antialiased edges (1: exact pixel centres)")
    t.add_argument("--masks", action="store_true", help="also write mask/NNNNNN.png")
    t.add_argument("--out", required=True, help="output folder")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=run_toy)

    c = sub.add_parser("check", help="check an SRN-layout dataset: objects and views per split "
                       "against the expected counts, image resolution, pose sanity, intrinsics; "
                       "exit status 1 when anything is wrong")
    c.add_argument("root", help="dataset root holding <category>_<split> folders "
                                "(e.g. data/shapenet)")
    c.add_argument("--category", required=True,
                   help="cars, chairs (expected counts known) or any other name (e.g. tables)")
    c.add_argument("--split", choices=("train", "val", "test"), default=None,
                   help="one split (default: train and test, and val when present)")
    c.add_argument("--expect-objects", default=None, metavar="N|SPLIT=N,...",
                   help="expected object count (all splits, or per split: train=64,test=8); "
                        "default: the SRN release's for cars/chairs")
    c.add_argument("--expect-views", default=None, metavar="N|SPLIT=N,...",
                   help="expected views per object, as --expect-objects")
    c.add_argument("--expect-res", type=int, default=None,
                   help="image size in pixels (default 128 for cars/chairs; other categories: "
                        "the size each intrinsics.txt declares)")
    c.add_argument("--pose-atol", type=float, default=1e-3,
                   help="tolerance of the rigid-pose check (1e-3)")
    c.add_argument("--quiet", action="store_true", help="no progress bar")
    c.set_defaults(func=run_check)

    v = sub.add_parser("preview", help="write a contact sheet PNG of a few objects and views")
    v.add_argument("dir", help="dataset folder (SRN layout), a split folder or an object")
    v.add_argument("--out", default=None, help="output PNG (default DIR/preview.png)")
    v.add_argument("--objects", type=int, default=4, help="objects per split (4)")
    v.add_argument("--views", type=int, default=6, help="views per object (6)")
    v.set_defaults(func=run_preview)

    e = sub.add_parser("export-transforms",
                       help="write a dataset as nerfstudio/Blender transforms.json scenes "
                            "(OpenGL cameras, images copied or linked)")
    e.add_argument("src", help="an object or scene folder (SRN object, Blender scene), or a "
                               "dataset root / split folder in SRN layout (one scene per object)")
    e.add_argument("--out", required=True,
                   help="output folder: OUT/transforms.json for one object, "
                        "OUT/<object id>/transforms.json for a dataset")
    e.add_argument("--category", default=None,
                   help="category of a dataset root (default: its only <category>_<split>)")
    e.add_argument("--split", default="train", help="split of a dataset root (train)")
    e.add_argument("--max-objects", type=int, default=None, help="first N objects only")
    e.add_argument("--link", action="store_true", help="symlink the images instead of copying")
    e.set_defaults(func=run_export_transforms)
    p.set_defaults(func=lambda args: (p.print_help(), 1)[1])


def run_toy(args: argparse.Namespace) -> int:
    import time

    from neural3d.commands._common import check_options
    from neural3d.config import at_least, between
    from neural3d.data.toy import write_toy_dataset

    check_options(args, objects=at_least(1), views=at_least(1), test_objects=at_least(0),
                  test_views=at_least(0), res=between(4, 4096), supersample=between(1, 16))
    t0 = time.perf_counter()
    summary = write_toy_dataset(args.out, args.category, objects=args.objects, views=args.views,
                                test_views=args.test_views, res=args.res, seed=args.seed,
                                test_objects=args.test_objects, supersample=args.supersample,
                                write_masks=args.masks, progress=not args.quiet)
    n = {k: len(v) for k, v in summary["splits"].items()}
    print(f"wrote {', '.join(f'{k}: {c} objects' for k, c in n.items())} to {args.out} "
          f"in {time.perf_counter() - t0:.1f} s")
    return 0


def per_split(value: str | None, option: str) -> dict[str, int] | None:
    """``"N"`` (every split) or ``"train=N,test=M"`` -> ``{split: N}``; errors name the option."""
    from neural3d.config import ConfigError
    from neural3d.data.check import SPLITS

    if value is None:
        return None
    try:
        if "=" not in value:
            return dict.fromkeys(SPLITS, int(value))
        out = {}
        for part in value.split(","):
            k, v = part.split("=")
            if k.strip() not in SPLITS:
                raise ValueError
            out[k.strip()] = int(v)
    except ValueError:
        raise ConfigError(f"{option}: expected N or SPLIT=N[,SPLIT=N] with SPLIT in "
                          f"{'/'.join(SPLITS)}, got {value!r}") from None
    if min(out.values()) < 0:
        raise ConfigError(f"{option}: counts must be >= 0, got {value!r}")
    return out


def run_check(args: argparse.Namespace) -> int:
    from neural3d.commands._common import check_options
    from neural3d.config import at_least, positive
    from neural3d.data.check import check_dataset, format_report

    check_options(args, expect_res=at_least(1), pose_atol=positive())
    reports = check_dataset(args.root, args.category, [args.split] if args.split else None,
                            per_split(args.expect_objects, "--expect-objects"),
                            per_split(args.expect_views, "--expect-views"), args.expect_res,
                            args.pose_atol, progress=not args.quiet)
    print(format_report(reports))
    return 0 if all(r.ok for r in reports) else 1


def run_preview(args: argparse.Namespace) -> int:
    from neural3d.commands._common import check_options
    from neural3d.config import at_least
    from neural3d.export.preview import contact_sheet

    check_options(args, objects=at_least(1), views=at_least(1))

    print(contact_sheet(args.dir, args.out, objects=args.objects, views=args.views))
    return 0


def _category(root, split: str) -> str:
    """The category of a dataset root holding exactly one ``<category>_<split>`` folder."""
    from neural3d.data import DataError

    found = sorted(p.name[:-len(split) - 1] for p in root.iterdir()
                   if p.is_dir() and p.name.endswith(f"_{split}"))
    if len(found) != 1:
        raise DataError(f"{root}: {'no' if not found else 'several'} <category>_{split} "
                        f"folders{' (' + ', '.join(found) + ')' if found else ''}; pass "
                        f"--category (and --split)")
    return found[0]


def run_export_transforms(args: argparse.Namespace) -> int:
    from pathlib import Path

    from neural3d.commands._common import check_options
    from neural3d.config import at_least
    from neural3d.data import DataError, SRNCategory, is_srn_object, read_object
    from neural3d.data.transforms import write_transforms

    check_options(args, max_objects=at_least(1))
    src, out = Path(args.src), Path(args.out)
    if not src.exists():
        raise DataError(f"{src}: no such file or folder")
    if src.is_file() or is_srn_object(src) or any(src.glob("transforms*.json")):
        print(f"wrote {write_transforms(read_object(src), out, args.link)}")
        return 0
    split_folder = any(p.is_dir() and is_srn_object(p) for p in src.iterdir())
    category = args.category or (src.name if split_folder else _category(src, args.split))
    cat = SRNCategory(src, category, args.split)
    ids = cat.object_ids[:args.max_objects]
    for oid in ids:
        write_transforms(cat.read(oid), out / oid, args.link)
    print(f"wrote {len(ids)} scenes ({cat.split_dir}) to {out}/<object id>/transforms.json")
    return 0
