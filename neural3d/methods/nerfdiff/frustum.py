"""Camera-aligned triplanes: world points in the *input* camera's frustum coordinates.

A world point ``p`` seen by the input camera (OpenCV, intrinsics ``fx, fy, cx, cy``, image
``W x H``) at pixel ``(x, y)`` (continuous, pixel centres at ``i + 0.5``) and camera depth ``z``
gets the frustum coordinates

    u = 2 x / W - 1,    v = 2 y / H - 1,    w = (z - near) / (far - near) * 2 - 1,

``near, far = d -/+ depth_radius`` with ``d`` the camera's distance to the origin. ``(u, v)``
are ``grid_sample``'s normalised coordinates with ``align_corners=False``: the centre of pixel
``(i, j)`` is where a ``W x H`` plane stores its entry ``[j, i]``. With the shared triplane layout
(planes xy, xz, yz = (u, v), (u, w), (v, w); first axis along the width) the first plane is
pixel-aligned with the input image, the second shares its columns, and :func:`align_planes` turns
the encoder's third map so that the third shares its rows.
"""

from __future__ import annotations

import torch

from neural3d.cameras import Cameras


def depth_range(cams: Cameras, depth_radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(near [N], far [N])``: the camera's distance to the origin -/+ ``depth_radius``
    (near kept positive)."""
    d = cams.centers.norm(dim=-1)
    return (d - depth_radius).clamp(min=1e-3), d + depth_radius


def frustum_coords(cams: Cameras, points: torch.Tensor, depth_radius: float) -> torch.Tensor:
    """World ``points [N, P, 3]`` (camera ``n`` sees ``points[n]``) -> frustum coordinates
    ``[N, P, 3]`` (``u, v, w`` above; inside the frustum and depth range they lie in
    ``[-1, 1]``). Points at or behind the camera plane (depth below 1e-4) are projected at that
    depth, and all coordinates are clamped to ``[-2, 2]``: finite, and outside the box when
    outside the frustum."""
    w2c = cams.w2c.to(points)
    cam = points @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]
    z = cam[..., 2].clamp(min=1e-4)
    f = torch.stack([cams.fx, cams.fy], -1).to(points)[:, None]
    c = torch.stack([cams.cx, cams.cy], -1).to(points)[:, None]
    size = torch.tensor([cams.width, cams.height], dtype=points.dtype, device=points.device)
    uv = cam[..., :2] / z[..., None] * f + c
    near, far = depth_range(cams, depth_radius)
    near, far = near.to(points)[:, None], far.to(points)[:, None]
    w = (cam[..., 2] - near) / (far - near) * 2 - 1
    return torch.cat([uv / size * 2 - 1, w[..., None]], -1).clamp(-2, 2)


def pixel_of(cams: Cameras, coords: torch.Tensor) -> torch.Tensor:
    """Frustum coordinates ``[N, P, 3]`` -> continuous pixel coordinates ``[N, P, 2]`` (the
    inverse of the first two of :func:`frustum_coords`)."""
    size = torch.tensor([cams.width, cams.height], dtype=coords.dtype, device=coords.device)
    return (coords[..., :2] + 1) / 2 * size


def align_planes(maps: torch.Tensor, channels: int) -> torch.Tensor:
    """Encoder output ``[B, 3C, H, W]`` -> planes ``[B, 3, C, H, W]`` (square images): the
    third map is transposed, so that its width axis runs along the image's rows (``v``)."""
    B, _, H, W = maps.shape
    planes = maps.reshape(B, 3, channels, H, W)
    return torch.cat([planes[:, :2], planes[:, 2:].transpose(-1, -2)], 1).contiguous()
