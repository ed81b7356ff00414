"""Marching cubes (scikit-image) on a field's density grid, with vertex colours, written as PLY.

The density is sampled at the centres of a ``res^3`` grid over the field's box; the iso-surface
``density = level`` is extracted in grid coordinates and mapped back to world coordinates (same
frame as the cameras, world up +z for our data). Vertex colours are the field's colour at the
vertex, pushed slightly outward along the normal so they come from the visible surface.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


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
        raise ValueError(f"no surface: density ranges over [{grid.min():.3g}, {grid.max():.3g}] "
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


def write_ply(path: str | Path, vertices: np.ndarray, faces: np.ndarray,
              colors: np.ndarray | None = None) -> Path:
    """Binary little-endian PLY with optional per-vertex uchar RGB."""
    path = Path(path)
    v = np.asarray(vertices, np.float32)
    f = np.asarray(faces, np.int32)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(v)}",
              "property float x", "property float y", "property float z"]
    if colors is not None:
        header += ["property uchar red", "property uchar green", "property uchar blue"]
    header += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header"]
    vdtype = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if colors is not None:
        vdtype += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vrec = np.empty(len(v), dtype=vdtype)
    vrec["x"], vrec["y"], vrec["z"] = v[:, 0], v[:, 1], v[:, 2]
    if colors is not None:
        c = np.asarray(colors, np.uint8)
        vrec["red"], vrec["green"], vrec["blue"] = c[:, 0], c[:, 1], c[:, 2]
    frec = np.empty(len(f), dtype=[("n", "u1"), ("i", "<i4", (3,))])
    frec["n"], frec["i"] = 3, f
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(("\n".join(header) + "\n").encode("ascii"))
        fh.write(vrec.tobytes())
        fh.write(frec.tobytes())
    return path


def read_ply(path: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Read back what :func:`write_ply` writes (for tests and quick checks)."""
    data = Path(path).read_bytes()
    end = data.index(b"end_header\n") + len(b"end_header\n")
    header = data[:end].decode("ascii").splitlines()
    nv = int(next(h for h in header if h.startswith("element vertex")).split()[-1])
    nf = int(next(h for h in header if h.startswith("element face")).split()[-1])
    has_col = any("red" in h for h in header)
    vdtype = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    if has_col:
        vdtype += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vrec = np.frombuffer(data, dtype=vdtype, count=nv, offset=end)
    off = end + vrec.nbytes
    frec = np.frombuffer(data, dtype=[("n", "u1"), ("i", "<i4", (3,))], count=nf, offset=off)
    verts = np.stack([vrec["x"], vrec["y"], vrec["z"]], -1)
    cols = np.stack([vrec["red"], vrec["green"], vrec["blue"]], -1) if has_col else None
    return verts, frec["i"].copy(), cols
