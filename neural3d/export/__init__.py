"""Exports: marching-cubes meshes with vertex colours (PLY, OBJ, GLB) and turntable videos."""

from neural3d.export.mesh import (
    MESH_FORMATS,
    MeshError,
    density_grid,
    export_mesh,
    extract_mesh,
    mesh_format,
    read_mesh,
    write_mesh,
)

__all__ = ["MESH_FORMATS", "MeshError", "density_grid", "export_mesh", "extract_mesh",
           "mesh_format", "read_mesh", "write_mesh"]
