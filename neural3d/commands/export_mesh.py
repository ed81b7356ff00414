"""``neural3d export-mesh CKPT --out mesh.ply``: marching cubes with vertex colours."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("export-mesh", help="extract a coloured mesh (PLY) from a "
                              "'neural3d fit' checkpoint with marching cubes")
    p.add_argument("ckpt", help="checkpoint (OUT/checkpoints/last.pt of neural3d fit)")
    p.add_argument("--out", required=True, help="output .ply")
    p.add_argument("--res", type=int, default=128, help="density grid resolution (128)")
    p.add_argument("--level", type=float, default=None,
                   help="density iso-level (default: half opacity over one grid cell)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from neural3d.export import extract_mesh, write_ply
    from neural3d.methods.fit import load_fit_model

    model, rec = load_fit_model(args.ckpt)

    def color(p: torch.Tensor) -> torch.Tensor:
        return model.field(p[None], None)[1][0]

    verts, faces, cols = extract_mesh(model.density, color, model.grid.aabb, args.res,
                                      args.level)
    path = write_ply(args.out, verts, faces, cols)
    print(f"wrote {path}: {len(verts)} vertices, {len(faces)} faces")
    return 0
