"""Exports: marching-cubes meshes with vertex colours (PLY) and turntable videos."""

from neural3d.export.mesh import density_grid, extract_mesh, write_ply

__all__ = ["density_grid", "extract_mesh", "write_ply"]
