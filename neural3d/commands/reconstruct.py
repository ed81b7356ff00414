"""``neural3d reconstruct METHOD CKPT --image IMG --pose POSE [--intrinsics K] --out DIR``: a 3D
object from one posed photo of your own, with a method that can reconstruct (``ssdnerf``).

The image (any size; RGBA is composited on white) is resized to the model's resolution (its
``home_camera``) and the intrinsics scaled with it. ``--pose``: an SRN pose file (4x4 OpenCV
camera-to-world, 16 numbers); ``--intrinsics``: an SRN ``intrinsics.txt`` (``f cx cy 0.`` on the
first line, ``H W`` on the last); without it the model's own intrinsics are assumed. Writes, and
prints, in DIR: ``view.png`` (input | render at the input pose), ``turntable.mp4`` (around the
object at the input camera's distance and elevation unless ``--radius``/``--elevation``),
``mesh.ply`` (when the method can export meshes) and ``state.pt`` (the reconstructed state).

``neural3d reconstruct METHOD --help`` lists the method's own options (reconstruction mode...).
"""

from __future__ import annotations

import argparse

from neural3d.commands._common import (
    add_method_command,
    add_runtime_args,
    check_options,
    method_parser,
    setup_runtime,
)


def register(subparsers: argparse._SubParsersAction) -> None:
    p = add_method_command(subparsers, "reconstruct", "reconstruct",
                           "reconstruct an object from one posed image of your own", __doc__)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import math
    from pathlib import Path

    import torch

    from neural3d.cameras import Cameras, orbit_path
    from neural3d.config import between, positive
    from neural3d.data import read_posed_image
    from neural3d.export.media import write_image_rows, write_video
    from neural3d.methods.registry import get_method, load

    cls = get_method(args.method, "reconstruct")
    p = method_parser("reconstruct", cls, __doc__)
    p.add_argument("ckpt", help="checkpoint (RUN/checkpoints/last.pt) or an exported folder")
    p.add_argument("--image", required=True, help="the photo (PNG/JPEG, any size)")
    p.add_argument("--pose", required=True, help="SRN pose file: 4x4 OpenCV camera-to-world")
    p.add_argument("--intrinsics", default=None,
                   help="SRN intrinsics.txt (default: the model's own intrinsics)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the reconstruction's noise")
    p.add_argument("--frames", type=int, default=36, help="turntable frames (36)")
    p.add_argument("--fps", type=int, default=12)
    p.add_argument("--radius", type=float, default=None,
                   help="turntable radius (default: the input camera's distance to the origin)")
    p.add_argument("--elevation", type=float, default=None,
                   help="turntable elevation in degrees (default: the input camera's)")
    p.add_argument("--mesh-res", type=int, default=128, help="mesh density grid (128)")
    p.add_argument("--level", type=float, default=None, help="mesh density iso-level")
    p.add_argument("--no-ema", action="store_true",
                   help="raw weights (default: the EMA copy once it has warmed up)")
    add_runtime_args(p)
    cls.add_arguments("reconstruct", p)
    ns = p.parse_intermixed_args(args.rest)
    check_options(ns, frames=between(1, 3600), fps=between(1, 240), radius=positive(),
                  elevation=between(-90, 90), mesh_res=between(2, 2048))
    opts = vars(ns)
    device = setup_runtime(ns)
    method = load(opts.pop("ckpt"), device, ema=False if opts.pop("no_ema") else "auto",
                  method=cls.name)
    home = method.home_camera()
    size = (home.height, home.width)
    images, cams = read_posed_image(
        opts.pop("image"), opts.pop("pose"), size, opts.pop("intrinsics"),
        tuple(float(getattr(home, k)[0]) for k in ("fx", "fy", "cx", "cy")))
    out = Path(opts.pop("out"))
    out.mkdir(parents=True, exist_ok=True)
    frames, fps, radius, elevation = (opts.pop(k) for k in ("frames", "fps", "radius",
                                                            "elevation"))
    mesh_res, level = opts.pop("mesh_res"), opts.pop("level")
    torch.manual_seed(opts.pop("seed"))
    for k in ("device", "threads"):
        opts.pop(k)

    state = method.reconstruct(images, cams, **opts)
    paths = [out / "state.pt"]
    torch.save(state.cpu() if torch.is_tensor(state) else state, paths[0])
    paths.append(write_image_rows(out / "view.png",
                                  [torch.cat([images, method.render(state, cams)])]))
    eye = cams.c2w[0, :3, 3].double()
    r = float(eye.norm()) if radius is None else radius
    el = (math.degrees(math.asin(max(-1.0, min(1.0, float(eye[2]) / max(r, 1e-9)))))
          if elevation is None else elevation)
    orbit = Cameras(orbit_path(frames, r, el), cams.fx[0], cams.fy[0], cams.cx[0], cams.cy[0],
                    cams.width, cams.height)
    paths.append(write_video(out / "turntable.mp4", method.render(state, orbit), fps))
    if "export" in type(method).capabilities():
        paths += method.export(out / "mesh.ply", res=mesh_res, level=level, state=state)
    for path in paths:
        print(path)
    return 0
