"""``neural3d view CKPT [--port P] [--host H]``: an interactive page (viser) to orbit a fitted
scene or the samples of a generative model (a slider over samples), and to record a camera path
(keyframes -> nerfstudio ``camera_path.json``, rendered by ``neural3d render --camera-path``).

Camera paths are written to ``RUN/camera_paths/camera_path.json`` (``RUN``: the run folder of
the checkpoint) or ``--out``, never over an existing file (``_001``, ``_002``... instead).
Needs the optional extra ``viewer`` (``pip install 'neural3d[viewer]'``). Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from neural3d.commands._common import add_runtime_args, check_options, setup_runtime


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("view", help="interactive web viewer (orbit, samples, camera "
                                           "paths)", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt", help="checkpoint (RUN/checkpoints/last.pt)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0: reachable from other machines)")
    p.add_argument("--port", type=int, default=8080,
                   help="port (the next free one if taken; the URL is printed)")
    p.add_argument("--samples", type=int, default=8, help="samples of a generative model")
    p.add_argument("--seed", type=int, default=0, help="seed of the samples")
    p.add_argument("--resolution", type=int, default=None,
                   help="rendered image height when the camera is still (default: the "
                        "model's native); a quarter of it while moving")
    p.add_argument("--out", default=None, help="camera path file (default: "
                                               "RUN/camera_paths/camera_path.json)")
    p.add_argument("--no-ema", action="store_true",
                   help="raw weights (default: the EMA copy once it has warmed up)")
    add_runtime_args(p)
    p.set_defaults(func=run)


def run_folder(ckpt: str | Path) -> Path:
    """The run folder of a checkpoint: ``RUN`` for ``RUN/checkpoints/NAME.pt``, else the
    checkpoint's folder."""
    ckpt = Path(ckpt).resolve()
    return ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent


def run(args: argparse.Namespace) -> int:
    import sys
    import time

    from neural3d.config import at_least, between

    check_options(args, port=between(0, 65535), samples=at_least(1), resolution=at_least(8))
    try:
        import viser  # noqa: F401
    except ImportError:
        print("neural3d view: needs viser, the optional extra `viewer`: "
              "pip install 'neural3d[viewer]'", file=sys.stderr)
        return 2
    from neural3d.methods.registry import load
    from neural3d.viewer.scene import Scene
    from neural3d.viewer.server import Viewer

    device = setup_runtime(args)
    if not Path(args.ckpt).is_file():
        raise FileNotFoundError(f"{args.ckpt}: no such checkpoint")
    method = load(args.ckpt, device, ema=False if args.no_ema else "auto")
    scene = Scene(method, args.samples, args.seed)
    out = Path(args.out) if args.out else run_folder(args.ckpt) / "camera_paths" / \
        "camera_path.json"
    viewer = Viewer(scene, out, args.host, args.port, args.resolution,
                    log=lambda s: print(s, flush=True))
    print(f"neural3d view: {method.name} at {viewer.url} (camera paths -> {out}; Ctrl-C "
          "stops)", flush=True)
    try:
        while True:
            time.sleep(3600)
    finally:
        viewer.close()
