"""Batched pinhole cameras, ray generation, convention conversions and camera paths.

Conventions (see docs/ARCHITECTURE.md):

* ``c2w`` is a camera-to-world 4x4 matrix in the **OpenCV** convention: camera x right, y down,
  z forward (the direction the camera looks). SRN, EG3D and COLMAP store poses this way.
* Pixel coordinates are continuous: pixel ``(i, j)`` (column ``i``, row ``j``) covers
  ``[i, i+1) x [j, j+1)`` and its centre is ``(i + 0.5, j + 0.5)``. A centred principal point is
  ``cx = width / 2``. This is also what nerfstudio, Blender/NeRF and PyTorch3D assume.
* OpenGL / Blender / nerfstudio c2w matrices have camera y up and z backwards: converting is a
  flip of the camera's y and z axes (``c2w @ diag(1, -1, -1, 1)``), its own inverse.
* World "up" for the SRN-style helpers here is +z (as in SRN cars/chairs poses).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

__all__ = [
    "Cameras",
    "rays_for_pixels",
    "look_at",
    "orbit_path",
    "spiral_path",
    "sphere_c2w",
    "SRN_SPIRAL_TURNS",
    "random_sphere_eyes",
    "opencv_to_opengl",
    "opengl_to_opencv",
    "to_pytorch3d",
    "from_pytorch3d",
    "to_nerfstudio",
    "from_nerfstudio",
    "focal_from_fov",
    "fov_from_focal",
    "is_rigid",
    "SRN_CARS_FOCAL_128",
]

#: Focal length (pixels) of SRN cars/chairs at 128x128 (fov about 52 degrees).
SRN_CARS_FOCAL_128 = 131.25


def focal_from_fov(fov_deg: float, size: int) -> float:
    """Focal length in pixels for a full field of view ``fov_deg`` across ``size`` pixels."""
    return 0.5 * size / math.tan(0.5 * math.radians(fov_deg))


def fov_from_focal(focal: float, size: int) -> float:
    """Full field of view in degrees for focal length ``focal`` (pixels) across ``size`` px."""
    return math.degrees(2.0 * math.atan(0.5 * size / focal))


def _per_camera(value: Any, n: int, name: str) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=torch.float32)
    if t.ndim == 0:
        t = t.expand(n).clone()
    t = t.reshape(-1)
    if t.shape[0] == 1 and n != 1:
        t = t.expand(n).clone()
    if t.shape[0] != n:
        raise ValueError(f"Cameras: {name} has {t.shape[0]} entries for {n} cameras")
    return t


@dataclass(eq=False)
class Cameras:
    """A batch of ``N`` pinhole cameras sharing one image size.

    ``c2w [N,4,4]`` float32 camera-to-world (OpenCV), ``fx, fy, cx, cy [N]`` in pixels,
    ``width``, ``height`` ints. Scalars / single matrices are broadcast on construction.
    Indexing always returns a (possibly length-1) batch: ``cams[3]`` has ``len() == 1``.
    """

    c2w: torch.Tensor
    fx: torch.Tensor
    fy: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    width: int
    height: int

    def __post_init__(self) -> None:
        c2w = self.c2w
        if not torch.is_tensor(c2w):
            c2w = torch.as_tensor(np.asarray(c2w), dtype=torch.float32)
        c2w = c2w.to(torch.float32)
        if c2w.ndim == 2:
            c2w = c2w[None]
        if c2w.ndim != 3 or c2w.shape[-2:] != (4, 4):
            raise ValueError(f"Cameras: c2w must be [N,4,4], got {tuple(c2w.shape)}")
        n = c2w.shape[0]
        dev = c2w.device
        self.c2w = c2w
        self.fx = _per_camera(self.fx, n, "fx").to(dev)
        self.fy = _per_camera(self.fy, n, "fy").to(dev)
        self.cx = _per_camera(self.cx, n, "cx").to(dev)
        self.cy = _per_camera(self.cy, n, "cy").to(dev)
        self.width = int(self.width)
        self.height = int(self.height)
        if self.width <= 0 or self.height <= 0:
            raise ValueError(f"Cameras: bad image size {self.width}x{self.height}")

    # ----------------------------------------------------------------------------- construction
    @classmethod
    def from_fov(cls, c2w: Any, fov_deg: float, width: int, height: int | None = None
                 ) -> Cameras:
        """Cameras with a horizontal field of view ``fov_deg``, square pixels, centred."""
        height = width if height is None else height
        f = focal_from_fov(fov_deg, width)
        return cls(c2w, f, f, width / 2.0, height / 2.0, width, height)

    @classmethod
    def srn(cls, c2w: Any, res: int = 128) -> Cameras:
        """Cameras with SRN cars/chairs intrinsics (f = 131.25 at 128 px, scaled with ``res``)."""
        f = SRN_CARS_FOCAL_128 * res / 128.0
        return cls(c2w, f, f, res / 2.0, res / 2.0, res, res)

    @staticmethod
    def cat(cams: list[Cameras]) -> Cameras:
        """Concatenate batches that share an image size."""
        if not cams:
            raise ValueError("Cameras.cat: empty list")
        w, h = cams[0].width, cams[0].height
        if any(c.width != w or c.height != h for c in cams):
            raise ValueError("Cameras.cat: all cameras must share one image size")
        return Cameras(torch.cat([c.c2w for c in cams]), torch.cat([c.fx for c in cams]),
                       torch.cat([c.fy for c in cams]), torch.cat([c.cx for c in cams]),
                       torch.cat([c.cy for c in cams]), w, h)

    # ---------------------------------------------------------------------------- batch basics
    def __len__(self) -> int:
        return self.c2w.shape[0]

    def __getitem__(self, idx: Any) -> Cameras:
        if isinstance(idx, int):
            n = len(self)
            if not -n <= idx < n:
                raise IndexError(f"camera index {idx} out of range for {n} cameras")
            idx = slice(idx % n, idx % n + 1)
        elif torch.is_tensor(idx) and idx.ndim == 0:
            return self[int(idx)]
        return Cameras(self.c2w[idx], self.fx[idx], self.fy[idx], self.cx[idx], self.cy[idx],
                       self.width, self.height)

    @property
    def device(self) -> torch.device:
        return self.c2w.device

    def to(self, device: Any) -> Cameras:
        return Cameras(self.c2w.to(device), self.fx.to(device), self.fy.to(device),
                       self.cx.to(device), self.cy.to(device), self.width, self.height)

    def scaled(self, new_width: int, new_height: int | None = None) -> Cameras:
        """The same cameras for images resized to ``new_width x new_height`` (intrinsics scaled).

        With continuous pixel coordinates (centres at +0.5) scaling is exact: ``cx' = cx * sx``.
        """
        new_height = (round(self.height * new_width / self.width) if new_height is None
                      else new_height)
        sx, sy = new_width / self.width, new_height / self.height
        return Cameras(self.c2w.clone(), self.fx * sx, self.fy * sy, self.cx * sx, self.cy * sy,
                       new_width, new_height)

    @property
    def K(self) -> torch.Tensor:
        """Intrinsic matrices ``[N,3,3]``."""
        K = torch.zeros(len(self), 3, 3, dtype=self.c2w.dtype, device=self.device)
        K[:, 0, 0], K[:, 1, 1] = self.fx, self.fy
        K[:, 0, 2], K[:, 1, 2] = self.cx, self.cy
        K[:, 2, 2] = 1.0
        return K

    @property
    def w2c(self) -> torch.Tensor:
        """World-to-camera ``[N,4,4]`` (rigid inverse of ``c2w``)."""
        R = self.c2w[:, :3, :3]
        t = self.c2w[:, :3, 3:]
        out = torch.zeros_like(self.c2w)
        out[:, :3, :3] = R.transpose(1, 2)
        out[:, :3, 3:] = -R.transpose(1, 2) @ t
        out[:, 3, 3] = 1.0
        return out

    @property
    def centers(self) -> torch.Tensor:
        """Camera centres in world coordinates ``[N,3]``."""
        return self.c2w[:, :3, 3]

    # ------------------------------------------------------------------------------------ rays
    def pixel_rays(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays through every pixel centre: ``(origins [N,H,W,3], directions [N,H,W,3])``.

        Directions are unit length, in world coordinates.
        """
        n, H, W = len(self), self.height, self.width
        dev, dt = self.device, self.c2w.dtype
        px = (torch.arange(W, device=dev, dtype=dt) + 0.5)[None, None, :].expand(n, H, W)
        py = (torch.arange(H, device=dev, dtype=dt) + 0.5)[None, :, None].expand(n, H, W)
        idx = torch.arange(n, device=dev)[:, None, None].expand(n, H, W)
        o, d = rays_for_pixels(self, idx.reshape(-1), px.reshape(-1), py.reshape(-1))
        return o.reshape(n, H, W, 3), d.reshape(n, H, W, 3)

    def project(self, points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project world points to continuous pixel coordinates.

        ``points [P,3]`` (same points for every camera) or ``[N,P,3]``. Returns
        ``(uv [N,P,2], depth [N,P])`` where ``uv = (x, y)`` in pixels (centre of pixel (i, j) is
        (i+0.5, j+0.5)) and ``depth`` is the camera-space z (positive in front of the camera).
        """
        pts = torch.as_tensor(points, dtype=self.c2w.dtype, device=self.device)
        if pts.ndim == 2:
            pts = pts[None].expand(len(self), -1, -1)
        w2c = self.w2c
        cam = pts @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]
        z = cam[..., 2]
        u = self.fx[:, None] * cam[..., 0] / z + self.cx[:, None]
        v = self.fy[:, None] * cam[..., 1] / z + self.cy[:, None]
        return torch.stack([u, v], dim=-1), z

    def __repr__(self) -> str:
        return (f"Cameras(n={len(self)}, {self.width}x{self.height}, "
                f"fx[0]={float(self.fx[0]):.3f}, device={self.device})")


def rays_for_pixels(cams: Cameras, cam_idx: torch.Tensor, px: torch.Tensor, py: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """Rays through continuous pixel coordinates: ``(origins [R,3], unit directions [R,3])``.

    ``cam_idx [R]`` selects the camera of each ray; ``px, py [R]`` are continuous pixel
    coordinates (the centre of pixel (i, j) is (i + 0.5, j + 0.5)).
    """
    cam_idx = torch.as_tensor(cam_idx, device=cams.device).long()
    px = torch.as_tensor(px, device=cams.device, dtype=cams.c2w.dtype)
    py = torch.as_tensor(py, device=cams.device, dtype=cams.c2w.dtype)
    x = (px - cams.cx[cam_idx]) / cams.fx[cam_idx]
    y = (py - cams.cy[cam_idx]) / cams.fy[cam_idx]
    d_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)
    c2w = cams.c2w[cam_idx]
    d = (c2w[:, :3, :3] @ d_cam[..., None])[..., 0]
    d = d / d.norm(dim=-1, keepdim=True)
    return c2w[:, :3, 3].clone(), d


# ------------------------------------------------------------------------------ pose helpers
def look_at(eye: Any, target: Any = (0.0, 0.0, 0.0), up: Any = (0.0, 0.0, 1.0)) -> torch.Tensor:
    """OpenCV camera-to-world matrices ``[N,4,4]`` for cameras at ``eye [N,3]`` looking at
    ``target`` (``[3]`` or ``[N,3]``), with image "up" (-y) as close to ``up`` as possible.

    When the viewing direction is parallel to ``up`` (a camera straight above the target) a
    fallback up vector is used, so the result is always a proper rotation.
    """
    eye = torch.as_tensor(np.asarray(eye) if not torch.is_tensor(eye) else eye)
    eye = eye.to(torch.float64 if eye.dtype == torch.float64 else torch.float32)
    if eye.ndim == 1:
        eye = eye[None]
    dt = eye.dtype
    target = torch.as_tensor(target, dtype=dt).expand_as(eye)
    up = torch.as_tensor(up, dtype=dt).expand_as(eye)
    z = target - eye
    z = z / z.norm(dim=-1, keepdim=True)
    x = torch.linalg.cross(z, up)
    bad = x.norm(dim=-1) < 1e-6
    if bad.any():
        # camera looks along +-up: pick the world axis least aligned with the view direction
        alt = torch.eye(3, dtype=dt)[z[bad].abs().argmin(dim=-1)]
        x[bad] = torch.linalg.cross(z[bad], alt)
    x = x / x.norm(dim=-1, keepdim=True)
    y = torch.linalg.cross(z, x)
    c2w = torch.zeros(eye.shape[0], 4, 4, dtype=dt)
    c2w[:, :3, 0], c2w[:, :3, 1], c2w[:, :3, 2], c2w[:, :3, 3] = x, y, z, eye
    c2w[:, 3, 3] = 1.0
    return c2w


def sphere_c2w(azimuth: Any, elevation: Any, radius: float = 1.3,
               target: Any = (0.0, 0.0, 0.0)) -> torch.Tensor:
    """OpenCV c2w (float64) of cameras at ``azimuth``/``elevation`` (radians; world up +z,
    azimuth from +x towards +y) on a sphere of ``radius`` around ``target``, looking at it.

    At the poles the camera's roll is the limit of the neighbouring poses (image x axis along
    ``(-sin az, cos az, 0)``), so paths through a pole do not flip.
    """
    az = torch.as_tensor(azimuth, dtype=torch.float64).reshape(-1)
    el = torch.as_tensor(elevation, dtype=torch.float64).reshape(-1)
    ce = torch.cos(el)
    eye = radius * torch.stack([ce * torch.cos(az), ce * torch.sin(az), torch.sin(el)], dim=-1)
    eye = eye + torch.as_tensor(target, dtype=torch.float64)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64).expand_as(eye).clone()
    pole = ce.abs() < 1e-9
    if pole.any():
        # cross(forward, up) = (-sin az, cos az, 0) at the pole when up = -sign(el)(cos, sin, 0)
        s = torch.sign(torch.sin(el[pole]))[:, None]
        up[pole] = -s * torch.stack([torch.cos(az[pole]), torch.sin(az[pole]),
                                     torch.zeros_like(az[pole])], dim=-1)
    return look_at(eye, target, up)


def orbit_path(n: int, radius: float = 1.3, elevation_deg: float = 20.0,
               target: Any = (0.0, 0.0, 0.0), start_azimuth_deg: float = 0.0,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Turntable: ``n`` cameras evenly spaced in azimuth (no repeated end pose) at a fixed
    elevation around ``target`` (world up +z). Returns OpenCV c2w ``[n,4,4]``."""
    az = torch.deg2rad(start_azimuth_deg + torch.arange(n, dtype=torch.float64) * 360.0 / n)
    el = torch.full_like(az, math.radians(elevation_deg))
    return sphere_c2w(az, el, radius, target).to(dtype)


#: Azimuth sweep of SRN's test spiral in turns: -20 rad (about 3.2 turns, clockwise from above).
SRN_SPIRAL_TURNS = -20.0 / (2.0 * math.pi)


def spiral_path(n: int, radius: float = 1.3, turns: float = SRN_SPIRAL_TURNS,
                min_elevation_deg: float = 0.0, max_elevation_deg: float = 90.0,
                target: Any = (0.0, 0.0, 0.0), start_azimuth_deg: float = 0.0,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """SRN-style test spiral over the upper hemisphere (world up +z): the elevation rises
    linearly from ``min_elevation_deg`` to ``max_elevation_deg`` while the azimuth sweeps
    ``turns`` turns. The defaults follow SRN's cars/chairs test poses (251 views, elevation
    0 -> 90 degrees, azimuth -20 rad). Returns OpenCV c2w ``[n,4,4]``."""
    t = torch.linspace(0.0, 1.0, n, dtype=torch.float64)
    el = torch.deg2rad(min_elevation_deg + t * (max_elevation_deg - min_elevation_deg))
    az = math.radians(start_azimuth_deg) + 2.0 * math.pi * turns * t
    return sphere_c2w(az, el, radius, target).to(dtype)


def random_sphere_eyes(n: int, radius: float = 1.3, upper_hemisphere: bool = True,
                       rng: np.random.Generator | int | None = None) -> np.ndarray:
    """``n`` camera positions uniformly distributed on the sphere (or its upper half, z >= 0)
    of ``radius`` around the origin, as float64 ``[n,3]`` (as SRN's training views)."""
    rng = np.random.default_rng(rng)
    z = rng.uniform(0.0 if upper_hemisphere else -1.0, 1.0, size=n)
    phi = rng.uniform(0.0, 2.0 * np.pi, size=n)
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    return radius * np.stack([r * np.cos(phi), r * np.sin(phi), z], axis=-1)


# ------------------------------------------------------------------------------ conventions
def _flip_yz(c2w: Any) -> Any:
    if torch.is_tensor(c2w):
        flip = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=c2w.dtype, device=c2w.device)
    else:
        c2w = np.asarray(c2w)
        flip = np.array([1.0, -1.0, -1.0, 1.0], dtype=c2w.dtype if c2w.dtype.kind == "f"
                        else np.float64)
    if c2w.shape[-1] == 4 and c2w.shape[-2] in (3, 4):
        return c2w * flip  # scales the columns: camera x, -y, -z, translation
    raise ValueError(f"expected [...,4,4] or [...,3,4] c2w, got shape {tuple(c2w.shape)}")


def opencv_to_opengl(c2w: Any) -> Any:
    """OpenCV c2w -> OpenGL/Blender/nerfstudio c2w (flip camera y and z). Torch or numpy."""
    return _flip_yz(c2w)


def opengl_to_opencv(c2w: Any) -> Any:
    """OpenGL/Blender/nerfstudio c2w -> OpenCV c2w (flip camera y and z). Torch or numpy."""
    return _flip_yz(c2w)


def to_pytorch3d(cams: Cameras) -> dict[str, torch.Tensor]:
    """Arguments for ``pytorch3d.renderer.PerspectiveCameras(**out)`` (plain math, no import).

    PyTorch3D uses row vectors (``X_view = X_world @ R + T``), view space +x left, +y up,
    +z forward, and NDC intrinsics (``in_ndc=True``) with scale ``min(H, W) / 2``; this mirrors
    ``pytorch3d.utils.cameras_from_opencv_projection``.
    """
    w2c = cams.w2c
    R_cv, t_cv = w2c[:, :3, :3], w2c[:, :3, 3]
    R = R_cv.transpose(1, 2).clone()
    T = t_cv.clone()
    R[:, :, :2] *= -1.0
    T[:, :2] *= -1.0
    size_wh = torch.tensor([cams.width, cams.height], dtype=R.dtype, device=R.device)
    scale = size_wh.min() / 2.0
    focal = torch.stack([cams.fx, cams.fy], dim=-1) / scale
    pp = -(torch.stack([cams.cx, cams.cy], dim=-1) - size_wh / 2.0) / scale
    image_size = torch.tensor([[cams.height, cams.width]], device=R.device).expand(len(cams), 2)
    return {"R": R, "T": T, "focal_length": focal, "principal_point": pp,
            "image_size": image_size.clone(), "in_ndc": True}


def from_pytorch3d(R: torch.Tensor, T: torch.Tensor, focal_length: torch.Tensor,
                   principal_point: torch.Tensor, image_size: Any, **_: Any) -> Cameras:
    """Inverse of :func:`to_pytorch3d` (NDC intrinsics, ``image_size`` rows of ``(H, W)``)."""
    R = torch.as_tensor(R, dtype=torch.float32).clone()
    T = torch.as_tensor(T, dtype=torch.float32).clone()
    R[:, :, :2] *= -1.0
    T[:, :2] *= -1.0
    R_cv, t_cv = R.transpose(1, 2), T
    c2w = torch.zeros(R.shape[0], 4, 4)
    c2w[:, :3, :3] = R_cv.transpose(1, 2)
    c2w[:, :3, 3] = -(R_cv.transpose(1, 2) @ t_cv[..., None])[..., 0]
    c2w[:, 3, 3] = 1.0
    hw = torch.as_tensor(image_size).reshape(-1, 2)[0]
    H, W = int(hw[0]), int(hw[1])
    size_wh = torch.tensor([W, H], dtype=torch.float32)
    scale = size_wh.min() / 2.0
    f = torch.as_tensor(focal_length, dtype=torch.float32) * scale
    c = -torch.as_tensor(principal_point, dtype=torch.float32) * scale + size_wh / 2.0
    return Cameras(c2w, f[:, 0], f[:, 1], c[:, 0], c[:, 1], W, H)


def to_nerfstudio(cams: Cameras) -> dict[str, Any]:
    """Arguments for ``nerfstudio.cameras.cameras.Cameras(**out)``: OpenGL ``[N,3,4]`` c2w and
    ``[N,1]`` intrinsics (nerfstudio also puts pixel centres at +0.5)."""
    return {"camera_to_worlds": opencv_to_opengl(cams.c2w)[:, :3, :],
            "fx": cams.fx[:, None].clone(), "fy": cams.fy[:, None].clone(),
            "cx": cams.cx[:, None].clone(), "cy": cams.cy[:, None].clone(),
            "width": cams.width, "height": cams.height}


def from_nerfstudio(camera_to_worlds: Any, fx: Any, fy: Any, cx: Any, cy: Any, width: int,
                    height: int, **_: Any) -> Cameras:
    """Inverse of :func:`to_nerfstudio` (OpenGL ``[N,3,4]`` or ``[N,4,4]`` c2w)."""
    m = torch.as_tensor(camera_to_worlds, dtype=torch.float32)
    if m.shape[-2] == 3:
        bottom = torch.tensor([0.0, 0.0, 0.0, 1.0]).expand(*m.shape[:-2], 1, 4)
        m = torch.cat([m, bottom], dim=-2)
    return Cameras(opengl_to_opencv(m), fx, fy, cx, cy, int(width), int(height))


def is_rigid(m: Any, atol: float = 1e-3) -> tuple[bool, str]:
    """Whether ``m`` (4x4) is a rigid transform: finite, orthonormal rotation with det +1,
    last row ``0 0 0 1`` (within ``atol``). Returns ``(ok, reason)``."""
    m = np.asarray(m, dtype=np.float64)
    if m.shape != (4, 4):
        return False, f"expected a 4x4 matrix, got shape {m.shape}"
    if not np.isfinite(m).all():
        return False, "matrix has NaN or infinite entries"
    if not np.allclose(m[3], [0.0, 0.0, 0.0, 1.0], atol=atol):
        return False, f"last row is {m[3].tolist()}, expected [0, 0, 0, 1]"
    R = m[:3, :3]
    err = np.abs(R.T @ R - np.eye(3)).max()
    if err > atol:
        return False, f"rotation part is not orthonormal (max |R^T R - I| = {err:.3g})"
    det = np.linalg.det(R)
    if abs(det - 1.0) > atol:
        return False, f"rotation part has determinant {det:.4f}, expected +1"
    return True, ""
