"""Scanned-mesh views (neural3d.data.mesh_views): normalisation, silhouettes against the analytic
projection of a sphere, shading in range, vertex colours, anti-aliasing, errors."""

import importlib.util
import math

import numpy as np
import pytest
import torch

trimesh = pytest.importorskip("trimesh")
if not trimesh.ray.has_embree and importlib.util.find_spec("rtree") is None:
    pytest.skip("neither embreex nor rtree: trimesh cannot cast rays", allow_module_level=True)

from neural3d.cameras import Cameras, look_at  # noqa: E402
from neural3d.data import mesh_views  # noqa: E402
from neural3d.data.mesh_views import (  # noqa: E402
    MeshTracer,
    load_mesh,
    render_mesh_views,
    sample_mesh_path,
)
from neural3d.data.raytrace import MAX_SHADE  # noqa: E402


def sphere_file(tmp_path, colour=None):
    mesh = trimesh.creation.icosphere(subdivisions=5, radius=2.0)
    mesh.apply_translation([3.0, -1.0, 0.5])
    if colour is not None:
        mesh.visual.vertex_colors = np.tile(np.array([*colour, 255], np.uint8),
                                            (len(mesh.vertices), 1))
    path = tmp_path / "sphere.ply"
    mesh.export(path)
    return path


def test_load_mesh_centres_scales_and_turns_up_to_z(tmp_path):
    box = trimesh.creation.box(extents=[1.0, 4.0, 2.0])
    box.apply_translation([5, 5, 5])
    path = tmp_path / "box.obj"
    box.export(path)
    m = load_mesh(path, up="y", extent=0.9)
    lo, hi = m.bounds
    np.testing.assert_allclose((lo + hi) / 2, 0, atol=1e-6)
    # y (the longest side, 4) is now z, scaled to 0.9; x stays 1 -> 0.225; z (2) -> y 0.45
    np.testing.assert_allclose(hi - lo, [0.225, 0.45, 0.9], atol=1e-6)
    with pytest.raises(ValueError, match="up must be"):
        load_mesh(path, up="w")


def test_sphere_silhouette_matches_its_projection(tmp_path):
    """A sphere of radius r seen from distance D covers the disc of angular radius asin(r / D):
    the coverage-weighted pixel count equals that disc's area in pixels to 2 %."""
    mesh = load_mesh(sphere_file(tmp_path), extent=0.8)  # radius 0.4
    res, D = 64, 1.3
    cams = Cameras.srn(look_at(torch.tensor([[D, 0.0, 0.0], [0.0, -D, 0.6]])
                               / torch.tensor([[1.0], [math.hypot(1, 0.6 / D)]])), res)
    imgs = render_mesh_views(mesh, cams, supersample=4)
    assert imgs.shape == (2, res, res, 3)
    tan_half = math.tan(math.asin(0.4 / D))
    expected = math.pi * (float(cams.fx[0]) * tan_half) ** 2
    fg = (imgs < 0.999).any(-1).float().sum((1, 2))  # pixels the sphere touches
    assert torch.allclose(fg, torch.full_like(fg, expected), rtol=0.06)


def test_vertex_colours_tint_the_shading_and_supersampling_softens_edges(tmp_path):
    mesh = load_mesh(sphere_file(tmp_path, colour=(255, 0, 0)), extent=0.8)
    cams = Cameras.srn(look_at(torch.tensor([[0.0, 0.0, 1.3]])), 32)
    sharp = render_mesh_views(mesh, cams, supersample=1)[0]
    soft = render_mesh_views(mesh, cams, supersample=4)[0]
    fg = (sharp < 0.999).any(-1)
    assert sharp[fg][:, 1:].max() == 0 and sharp[fg][:, 0].min() > 0   # red only
    assert sharp[fg].max() <= MAX_SHADE + 1e-6                          # never white
    # aliased: each pixel is object or background; anti-aliased: partial pixels on the edge
    partial = ((soft < 0.999).any(-1) & (soft[..., 1] > 0.01)).sum()
    assert partial > 0
    assert ((sharp[..., 1] > 0) & (sharp[..., 1] < 1)).sum() == 0


def test_tracer_misses_give_the_background(tmp_path):
    mesh = load_mesh(sphere_file(tmp_path), extent=0.8)
    o = np.array([[0.0, 0.0, 2.0], [5.0, 5.0, 2.0]])
    d = np.array([[0.0, 0.0, -1.0], [0.0, 0.0, -1.0]])
    rgb, hit = MeshTracer(mesh, background=(0.2, 0.3, 0.4))(o, d)
    assert hit.tolist() == [True, False]
    np.testing.assert_allclose(rgb[1], [0.2, 0.3, 0.4])


def test_sample_meshes_name_their_package(monkeypatch):
    with pytest.raises(KeyError, match="unknown sample mesh"):
        sample_mesh_path("teapot")
    monkeypatch.setattr(mesh_views.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match=r"pymeshlab: pip install -e '\.\[meshes\]'"):
        sample_mesh_path("bunny")
    with pytest.raises(ModuleNotFoundError, match=r"genesis: pip install --no-deps genesis-world"):
        sample_mesh_path("dragon")


def test_volume_scan_becomes_its_isosurface(tmp_path):
    """A NIfTI volume of a bright ball (radius 10 voxels of 2 mm, so 20 mm) in a dark box: the
    Otsu isosurface is that sphere in the affine's millimetres, to a voxel."""
    nibabel = pytest.importorskip("nibabel")
    pytest.importorskip("skimage")
    grid = np.indices((32, 32, 32)).astype(np.float32)
    r = np.sqrt(((grid - 15.5) ** 2).sum(0))
    volume = np.where(r < 10.0, 200.0, 10.0).astype(np.float32)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = [-40.0, 7.0, 3.0]
    path = tmp_path / "ball.nii.gz"
    nibabel.save(nibabel.Nifti1Image(volume, affine), path)
    mesh = mesh_views.volume_isosurface(path)
    centre = 2.0 * 15.5 + affine[:3, 3]
    radii = np.linalg.norm(mesh.vertices - centre, axis=1)
    assert abs(radii.mean() - 20.0) < 2.0 and radii.std() < 1.0
    normalised = load_mesh(path, extent=0.9)
    np.testing.assert_allclose(normalised.bounds[1] - normalised.bounds[0], 0.9, atol=0.02)
    nibabel.save(nibabel.Nifti1Image(np.zeros((4, 4, 4), np.float32), np.eye(4)),
                 tmp_path / "flat.nii.gz")
    with pytest.raises(ValueError, match="flat.nii.gz: not a 3-D volume with contrast"):
        mesh_views.volume_isosurface(tmp_path / "flat.nii.gz")
