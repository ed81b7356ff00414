"""Marching cubes (scikit-image) on a field's density grid, with vertex colours, written as
PLY, OBJ or GLB (trimesh).

The density is sampled at the centres of a ``res^3`` grid over the field's box; the iso-surface
``density = level`` is extracted in grid coordinates and mapped back to world coordinates (same
frame as the cameras, world up +z for our data). Vertex colours are the field's colour at the
vertex, pushed slightly outward along the normal so they come from the visible surface.

Files: PLY and OBJ hold world coordinates as they are; GLB follows glTF's +Y-up convention, so
:func:`write_mesh` turns world +z up into +y up there (``(x, y, z) -> (x, z, -y)``) and
:func:`read_mesh` turns it back: a round trip returns the world coordinates in every format.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


class MeshError(ValueError):
    """No surface at the chosen iso-level (the message names the density range)."""


@torch.no_grad()
def density_grid(density_fn, aabb: torch.Tensor, res: int = 128, chunk: int = 131072
                 ) -> torch.Tensor:
    """``density_fn(points [N,3]) -> [N]`` sampled on ``res^3`` cell centres -> ``[res]^3``."""
    lo, hi = aabb[:3].float(), aabb[3:].float()
    lin = [(torch.arange(res) + 0.5) / res * (hi[i] - lo[i]) + lo[i] for i in range(3)]
    pts = torch.stack(torch.meshgrid(*lin, indexing="ij"), -1).reshape(-1, 3)
    out = torch.cat([density_fn(pts[s:s + chunk]) for s in range(0, pts.shape[0], chunk)])
    return out.reshape(res, res, res)


@torch.no_grad()
def extract_mesh(density_fn, color_fn, aabb: torch.Tensor, res: int = 128,
                 level: float | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns ``(vertices [V,3] float32 world, faces [F,3] int32, colours [V,3] uint8)``.

    ``level`` defaults to the density where a cell of the grid is half opaque
    (``1 - exp(-sigma * cell) = 0.5``)."""
    from skimage.measure import marching_cubes

    grid = density_grid(density_fn, aabb, res).numpy()
    cell = (aabb[3:] - aabb[:3]).float() / res
    if level is None:
        level = float(np.log(2.0) / float(cell.mean()))
    if not (grid.min() < level < grid.max()):
        raise MeshError(f"no surface: density ranges over [{grid.min():.3g}, {grid.max():.3g}] "
                         f"and the level is {level:.3g}; pass another --level")
    verts, faces, normals, _ = marching_cubes(grid, level=level)
    # grid index i sits at the centre lo + (i + 0.5) * cell
    v = torch.from_numpy(verts.copy()).float()
    world = aabb[:3].float() + (v + 0.5) * cell
    n = torch.from_numpy(normals.copy()).float()
    # skimage normals point towards decreasing values (outward for a density field)
    probe = world + n * float(cell.mean())
    cols = torch.cat([color_fn(probe[s:s + 65536]) for s in range(0, probe.shape[0], 65536)])
    cols = (cols.clamp(0, 1) * 255 + 0.5).to(torch.uint8).numpy()
    return world.numpy().astype(np.float32), faces.astype(np.int32), cols


#: mesh file formats by suffix (what ``neural3d export --format`` offers besides weights)
MESH_FORMATS = ("ply", "obj", "glb")
#: world (+z up) -> glTF (+y up): (x, y, z) -> (x, z, -y)
_Z_UP_TO_Y_UP = np.array([[1.0, 0, 0], [0, 0, 1], [0, -1, 0]])


def mesh_format(path: str | Path) -> str:
    """The format of a mesh file from its suffix (one of :data:`MESH_FORMATS`)."""
    fmt = Path(path).suffix.lower().lstrip(".")
    if fmt not in MESH_FORMATS:
        raise ValueError(f"{path}: unknown mesh format {fmt or '(no suffix)'!r} (use "
                         f"{', '.join('.' + f for f in MESH_FORMATS)})")
    return fmt


def export_mesh(path: str | Path, density_fn, color_fn, aabb, res: int = 128,
                level: float | None = None) -> Path:
    """:func:`extract_mesh` then :func:`write_mesh` (the methods' ``export``)."""
    verts, faces, cols = extract_mesh(density_fn, color_fn, torch.as_tensor(aabb), res, level)
    return write_mesh(path, verts, faces, cols)


def write_mesh(path: str | Path, vertices: np.ndarray, faces: np.ndarray,
               colors: np.ndarray | None = None) -> Path:
    """Write a triangle mesh (``vertices [V,3]`` world, ``faces [F,3]``, optional per-vertex
    ``colors [V,3]`` uint8) as PLY (binary), OBJ (``v x y z r g b``) or GLB (``COLOR_0``), the
    format chosen by the suffix of ``path``; vertex order and faces are kept."""
    import trimesh

    path = Path(path)
    fmt = mesh_format(path)
    v = np.asarray(vertices, np.float64)
    if fmt == "glb":
        v = v @ _Z_UP_TO_Y_UP.T
    mesh = trimesh.Trimesh(v, np.asarray(faces, np.int64), process=False,
                           vertex_colors=None if colors is None else np.asarray(colors, np.uint8))
    path.parent.mkdir(parents=True, exist_ok=True)
    mesh.export(path, file_type=fmt)
    return path


def read_mesh(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read back what :func:`write_mesh` writes: ``(vertices [V,3] float64 world, faces [F,3],
    colours [V,3] uint8 or None)`` (GLB turned back to +z up)."""
    import trimesh

    fmt = mesh_format(path)
    mesh = trimesh.load(Path(path), file_type=fmt, process=False, force="mesh")
    v = np.asarray(mesh.vertices, np.float64)
    if fmt == "glb":
        v = v @ _Z_UP_TO_Y_UP
    cols = (np.asarray(mesh.visual.vertex_colors)[:, :3].copy()
            if mesh.visual.kind == "vertex" else None)
    return v, np.asarray(mesh.faces), cols
