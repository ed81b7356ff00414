"""``neural3d render CKPT --out FILE``: a video (or a folder of PNG frames) along a camera path.

``--path orbit|spiral`` flies around a fitted scene (methods holding one scene and a
``camera_path``: ``fit``). ``--camera-path FILE`` renders the frames of a nerfstudio
``camera_path.json`` (as ``neural3d view`` writes them) for any method that renders: a fitted
scene, or sample ``--sample`` of ``--samples`` drawn with ``--seed`` (the viewer's slider:
the same three numbers show the same sample).
"""

from __future__ import annotations

import argparse

from neural3d.commands._common import add_runtime_args, check_options, setup_runtime


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("render", help="render a camera path (video or frames)",
                              description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("ckpt", help="checkpoint (RUN/checkpoints/last.pt)")
    p.add_argument("--path", choices=("orbit", "spiral"), default=None,
                   help="a built-in path around a fitted scene (default: orbit)")
    p.add_argument("--camera-path", default=None, metavar="FILE",
                   help="a nerfstudio camera_path.json (e.g. from neural3d view)")
    p.add_argument("--frames", type=int, default=None, help="frames of --path (default 60)")
    p.add_argument("--width", type=int, default=None,
                   help="image width (default: training, or the camera path's)")
    p.add_argument("--samples", type=int, default=8, help="generative methods: samples drawn")
    p.add_argument("--sample", type=int, default=0, help="generative methods: which one")
    p.add_argument("--seed", type=int, default=0, help="generative methods: their seed")
    p.add_argument("--no-ema", action="store_true",
                   help="raw weights (default: the EMA copy once it has warmed up)")
    p.add_argument("--out", required=True,
                   help="output .mp4 (or .gif), or a folder for PNG frames")
    add_runtime_args(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import torch

    from neural3d.config import ConfigError, at_least
    from neural3d.methods.registry import MethodError, get_method, load

    check_options(args, frames=at_least(1), width=at_least(1), samples=at_least(1),
                  sample=at_least(0), seed=at_least(0))
    if args.camera_path and (args.path or args.frames):
        raise ConfigError("--camera-path: the file sets the cameras (drop --path/--frames)")
    if args.sample >= args.samples:
        raise ConfigError(f"--sample: must be < --samples ({args.samples}), got {args.sample}")
    device = setup_runtime(args)
    method = load(args.ckpt, device, ema=False if args.no_ema else "auto")
    get_method(method.name, "render")
    if args.camera_path:
        from neural3d.viewer.camera_path import read_camera_path
        from neural3d.viewer.scene import Scene

        path = read_camera_path(args.camera_path)
        cams = path.cameras
        if args.width:
            cams = cams.scaled(args.width)
        scene = Scene(method, args.samples, args.seed)
        frames = torch.cat([scene.render(cams[i], args.sample) for i in range(len(cams))])
        fps, what = max(1, round(path.fps)), args.camera_path
    else:
        if not hasattr(method, "camera_path"):
            raise MethodError(f"method {method.name!r} holds no single scene to fly around "
                              "(--camera-path renders its samples)")
        n = args.frames or 60
        frames = method.render(None, method.camera_path(args.path or "orbit", n, args.width))
        fps, what = 24, args.path or "orbit"
    out = write_frames(Path(args.out), frames, fps)
    print(f"wrote {out} ({len(frames)} frames, {what})")
    return 0


def write_frames(out, frames, fps: int):
    """A video for ``.mp4``/``.gif``, else ``out/frame_NNNN.png`` per frame; returns the path."""
    from neural3d.export.media import to_uint8, write_video

    if out.suffix.lower() in (".mp4", ".gif"):
        return write_video(out, frames, fps)
    import imageio.v2 as iio

    out.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        iio.imwrite(out / f"frame_{i:04d}.png", to_uint8(f))
    return out
