import math

import numpy as np
import pytest
import torch

from neural3d.cameras import (
    Cameras,
    focal_from_fov,
    fov_from_focal,
    from_nerfstudio,
    from_pytorch3d,
    is_rigid,
    look_at,
    opencv_to_opengl,
    opengl_to_opencv,
    orbit_path,
    random_sphere_eyes,
    rays_for_pixels,
    spiral_path,
    to_nerfstudio,
    to_pytorch3d,
)


def _cams(n=5, w=32, h=24, seed=0):
    eyes = random_sphere_eyes(n, radius=1.3, upper_hemisphere=False, rng=seed)
    c2w = look_at(eyes, target=(0.05, -0.02, 0.1))
    fx = torch.linspace(25.0, 35.0, n)
    return Cameras(c2w, fx, fx * 1.1, 15.5, 12.25, w, h)


def test_look_at_is_rigid_opencv_and_centre_ray_hits_target():
    target = torch.tensor([0.1, -0.2, 0.3])
    eyes = torch.tensor([[1.0, 0.5, 0.8], [-1.2, 0.0, 0.1], [0.0, 0.0, 2.0], [0.0, 0.0, -2.0]])
    c2w = look_at(eyes, target)
    for m in c2w:
        assert is_rigid(m.numpy(), atol=1e-5)[0]
    # OpenCV: z looks at the target, y points down (away from world up)
    fwd = (target - eyes) / (target - eyes).norm(dim=-1, keepdim=True)
    assert torch.allclose(c2w[:, :3, 2], fwd, atol=1e-6)
    assert (c2w[:2, 2, 1] < 0).all()  # image-down axis has negative world z
    # the ray through the image centre (odd size: a pixel centre) passes through the target
    cams = Cameras(c2w, 40.0, 40.0, 16.5, 12.5, 33, 25)
    o, d = cams.pixel_rays()
    centre_o, centre_d = o[:, 12, 16], d[:, 12, 16]
    to_t = target - centre_o
    dist = (to_t - (to_t * centre_d).sum(-1, keepdim=True) * centre_d).norm(dim=-1)
    assert dist.max() < 1e-5


def test_project_inverts_rays():
    cams = _cams()
    n = len(cams)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, n, (200,), generator=g)
    px = torch.rand(200, generator=g) * cams.width
    py = torch.rand(200, generator=g) * cams.height
    o, d = rays_for_pixels(cams, idx, px, py)
    assert torch.allclose(d.norm(dim=-1), torch.ones(200), atol=1e-6)
    pts = o + d * (0.5 + torch.rand(200, 1, generator=g))
    uv, depth = cams.project(pts)  # [N,P,2]
    sel = uv[idx, torch.arange(200)]
    assert torch.allclose(sel[:, 0], px, atol=1e-3) and torch.allclose(sel[:, 1], py, atol=1e-3)
    assert (depth[idx, torch.arange(200)] > 0).all()


def test_pixel_rays_go_through_pixel_centres():
    cams = _cams(n=2, w=8, h=6)
    o, d = cams.pixel_rays()
    assert o.shape == (2, 6, 8, 3) and d.shape == (2, 6, 8, 3)
    uv, _ = cams.project((o + 2.0 * d).reshape(2, -1, 3))
    uv = uv.reshape(2, 6, 8, 2)
    assert torch.allclose(uv[0, 0, 0], torch.tensor([0.5, 0.5]), atol=1e-4)
    assert torch.allclose(uv[1, 5, 7], torch.tensor([7.5, 5.5]), atol=1e-4)


def test_known_geometry_point_on_axis_projects_to_principal_point():
    # camera at (0,0,-2) looking at the origin along +z (world up +y here -> image down = -y)
    c2w = look_at(torch.tensor([[0.0, 0.0, -2.0]]), up=(0.0, 1.0, 0.0))
    cams = Cameras(c2w, 100.0, 100.0, 32.0, 24.0, 64, 48)
    uv, z = cams.project(torch.tensor([[0.0, 0.0, 0.0], [0.0, 0.2, 0.0], [0.1, 0.0, 0.0]]))
    assert torch.allclose(uv[0, 0], torch.tensor([32.0, 24.0]))
    assert float(z[0, 0]) == pytest.approx(2.0)
    assert float(uv[0, 1, 1]) == pytest.approx(24.0 - 100 * 0.2 / 2.0)  # world up -> image up
    assert float(uv[0, 2, 0]) == pytest.approx(32.0 - 100 * 0.1 / 2.0)  # viewed from -z


def test_opengl_round_trip_and_axes():
    cams = _cams()
    gl = opencv_to_opengl(cams.c2w)
    assert torch.allclose(opengl_to_opencv(gl), cams.c2w)
    # OpenGL camera looks down its -z axis: -z_gl equals +z_cv, y_gl = -y_cv
    assert torch.allclose(-gl[:, :3, 2], cams.c2w[:, :3, 2])
    assert torch.allclose(gl[:, :3, 1], -cams.c2w[:, :3, 1])
    np_gl = opencv_to_opengl(cams.c2w.numpy())
    assert isinstance(np_gl, np.ndarray) and np.allclose(np_gl, gl.numpy())
    ns = to_nerfstudio(cams)
    assert ns["camera_to_worlds"].shape == (len(cams), 3, 4)
    back = from_nerfstudio(**ns)
    assert torch.allclose(back.c2w, cams.c2w, atol=1e-6) and torch.equal(back.fy, cams.fy)


def test_pytorch3d_conversion_projects_like_opencv():
    cams = _cams()
    p3 = to_pytorch3d(cams)
    pts = torch.randn(len(cams), 10, 3) * 0.3
    # PyTorch3D math: X_view = X @ R + T (+x left, +y up), NDC = f * X/Z + p,
    # NDC (+1, +1) is the top-left corner; scale = min(H, W) / 2.
    xv = pts @ p3["R"] + p3["T"][:, None]
    ndc = p3["focal_length"][:, None] * xv[..., :2] / xv[..., 2:] + p3["principal_point"][:, None]
    s = min(cams.width, cams.height) / 2.0
    u = cams.width / 2.0 - ndc[..., 0] * s
    v = cams.height / 2.0 - ndc[..., 1] * s
    uv, _ = cams.project(pts)
    assert torch.allclose(torch.stack([u, v], -1), uv, atol=1e-3)
    back = from_pytorch3d(**p3)
    assert torch.allclose(back.c2w, cams.c2w, atol=1e-5)
    for k in ("fx", "fy", "cx", "cy"):
        assert torch.allclose(getattr(back, k), getattr(cams, k), atol=1e-4)
    assert (back.width, back.height) == (cams.width, cams.height)


def test_indexing_scaling_and_to():
    cams = _cams(n=4, w=32, h=24)
    assert len(cams) == 4 and len(cams[1]) == 1 and len(cams[-1]) == 1
    assert len(cams[torch.tensor([0, 2])]) == 2 and len(cams[1:3]) == 2
    with pytest.raises(IndexError):
        cams[4]
    half = cams.scaled(16, 12)
    assert half.width == 16 and torch.allclose(half.cx, cams.cx / 2)
    # the same world point lands on the same relative image position
    pts = torch.tensor([[0.1, 0.0, 0.05]])
    uv, _ = cams.project(pts)
    uv2, _ = half.project(pts)
    assert torch.allclose(uv2, uv / 2, atol=1e-4)
    assert cams.to("cpu").c2w.device.type == "cpu"
    assert torch.allclose(cams.K[:, 0, 0], cams.fx)
    eye = cams.c2w @ cams.w2c
    assert torch.allclose(eye, torch.eye(4).expand(4, 4, 4), atol=1e-5)
    both = Cameras.cat([cams[0], cams[2]])
    assert len(both) == 2 and torch.equal(both.c2w[1], cams.c2w[2])


def test_paths_look_at_origin_with_right_radius():
    for c2w in (orbit_path(12, radius=1.3, elevation_deg=30), spiral_path(251)):
        assert torch.allclose(c2w[:, :3, 3].norm(dim=-1), torch.full((len(c2w),), 1.3), atol=1e-5)
        fwd = -c2w[:, :3, 3] / 1.3
        assert torch.allclose(c2w[:, :3, 2], fwd, atol=1e-5)
        assert all(is_rigid(m.numpy(), atol=1e-5)[0] for m in c2w)
    sp = spiral_path(251)
    elev = torch.asin(sp[:, 2, 3] / 1.3)
    assert elev[0].abs() < 1e-4 and (elev[1:] - elev[:-1] >= -1e-6).all() and elev.max() > 1.0
    orb = orbit_path(12, elevation_deg=30)
    assert torch.allclose(orb[:, 2, 3], torch.full((12,), 1.3 * math.sin(math.radians(30))))
    eyes = random_sphere_eyes(500, rng=1)
    assert (eyes[:, 2] >= 0).all() and np.allclose(np.linalg.norm(eyes, axis=1), 1.3)


def test_is_rigid_rejects_bad_matrices():
    good = look_at(torch.tensor([[1.0, 1.0, 1.0]]))[0].numpy()
    assert is_rigid(good)[0]
    scaled = good.copy()
    scaled[:3, :3] *= 2
    mirrored = good.copy()
    mirrored[:3, 0] *= -1
    last = good.copy()
    last[3, 0] = 0.5
    nan = good.copy()
    nan[0, 0] = np.nan
    for bad, word in ((scaled, "orthonormal"), (mirrored, "determinant"), (last, "last row"),
                      (nan, "NaN")):
        ok, why = is_rigid(bad)
        assert not ok and word in why


def test_fov_helpers_match_srn():
    assert fov_from_focal(131.25, 128) == pytest.approx(51.98, abs=0.01)
    assert focal_from_fov(fov_from_focal(131.25, 128), 64) == pytest.approx(65.625)
    c = Cameras.srn(torch.eye(4), res=64)
    assert float(c.fx[0]) == pytest.approx(65.625) and float(c.cx[0]) == 32.0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cameras_on_cuda_match_cpu():
    cams = _cams()
    gpu = cams.to("cuda")
    o, d = gpu.pixel_rays()
    o_cpu, d_cpu = cams.pixel_rays()
    assert o.is_cuda and torch.allclose(d.cpu(), d_cpu, atol=1e-5)
    idx = torch.tensor([0, 3, 4])
    o2, d2 = rays_for_pixels(gpu, idx, torch.tensor([1.5, 2.0, 3.0]), torch.tensor([0.5, 4, 9]))
    assert d2.is_cuda
    uv, _ = gpu[idx].project(torch.zeros(1, 3, device="cuda"))
    assert uv.is_cuda and len(gpu[idx]) == 3


def test_spiral_matches_srn_test_poses_and_has_no_flip_at_pole():
    sp = spiral_path(251, dtype=torch.float64)
    # SRN cars test spiral: elevation 0 at view 0, 45 deg at view 125, the pole at view 250
    z = sp[:, 2, 3] / 1.3
    assert abs(float(z[0])) < 1e-9 and float(z[125]) == pytest.approx(math.sin(math.pi / 4))
    assert float(z[250]) == pytest.approx(1.0)
    az = torch.atan2(sp[:10, 1, 3], sp[:10, 0, 3])
    step = torch.remainder(az[1:] - az[:-1] + math.pi, 2 * math.pi) - math.pi
    expected = torch.full((9,), -20.0 / 250, dtype=torch.float64)  # clockwise from above
    assert torch.allclose(step, expected, atol=1e-9)
    # the last (pole) pose continues the roll of its neighbour
    assert float((sp[250, :3, 0] * sp[249, :3, 0]).sum()) > 0.99
    assert is_rigid(sp[250].numpy(), atol=1e-9)[0]
