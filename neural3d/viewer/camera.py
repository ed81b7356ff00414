"""Viewer cameras <-> :class:`~neural3d.cameras.Cameras`.

A viewer camera (viser's ``client.camera``) is ``position [3]`` and ``wxyz [4]``, the rotation
of ``P_world = R p_camera + position`` as a unit quaternion, in the OpenCV camera convention
(x right, y down, z forward: the same as :class:`~neural3d.cameras.Cameras`), a **vertical**
field of view ``fov`` in radians and ``aspect = width / height``. Images are rendered with
square pixels and the principal point at the centre.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from neural3d.cameras import Cameras


def quat_to_matrix(wxyz) -> np.ndarray:
    """Rotation matrix ``[3, 3]`` (float64) of a quaternion ``(w, x, y, z)`` (normalised here)."""
    w, x, y, z = np.asarray(wxyz, dtype=np.float64) / np.linalg.norm(wxyz)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])


def matrix_to_quat(R) -> np.ndarray:
    """Quaternion ``(w, x, y, z)`` with ``w >= 0`` of a rotation matrix ``[3, 3]``."""
    R = np.asarray(R, dtype=np.float64)
    # Shepperd's method: pivot on the largest of the four squared components
    t = np.array([1 + R[0, 0] + R[1, 1] + R[2, 2], 1 + R[0, 0] - R[1, 1] - R[2, 2],
                  1 - R[0, 0] + R[1, 1] - R[2, 2], 1 - R[0, 0] - R[1, 1] + R[2, 2]])
    k = int(t.argmax())
    s = 0.5 / math.sqrt(max(t[k], 1e-12))
    if k == 0:
        q = [0.25 / s, (R[2, 1] - R[1, 2]) * s, (R[0, 2] - R[2, 0]) * s, (R[1, 0] - R[0, 1]) * s]
    elif k == 1:
        q = [(R[2, 1] - R[1, 2]) * s, 0.25 / s, (R[0, 1] + R[1, 0]) * s, (R[0, 2] + R[2, 0]) * s]
    elif k == 2:
        q = [(R[0, 2] - R[2, 0]) * s, (R[0, 1] + R[1, 0]) * s, 0.25 / s, (R[1, 2] + R[2, 1]) * s]
    else:
        q = [(R[1, 0] - R[0, 1]) * s, (R[0, 2] + R[2, 0]) * s, (R[1, 2] + R[2, 1]) * s, 0.25 / s]
    q = np.array(q) / np.linalg.norm(q)
    return -q if q[0] < 0 else q


def viewer_cameras(position, wxyz, fov: float, aspect: float, height: int) -> Cameras:
    """One camera (``len == 1``) for a viewer camera rendered ``height`` pixels high and
    ``round(height * aspect)`` wide (vertical ``fov`` in radians)."""
    if not 0 < fov < math.pi or not aspect > 0 or height < 1:
        raise ValueError(f"viewer camera: bad fov {fov}, aspect {aspect} or height {height}")
    width = max(1, round(height * aspect))
    c2w = np.eye(4)
    c2w[:3, :3] = quat_to_matrix(wxyz)
    c2w[:3, 3] = np.asarray(position, dtype=np.float64)
    f = 0.5 * height / math.tan(0.5 * fov)
    return Cameras(torch.from_numpy(c2w).float(), f, f, width / 2.0, height / 2.0, width,
                   height)


def viewer_pose(cams: Cameras, i: int = 0) -> tuple[np.ndarray, np.ndarray, float, float]:
    """``(position [3], wxyz [4], vertical fov in radians, aspect)`` of camera ``i``: the
    inverse of :func:`viewer_cameras` (for centred cameras with square pixels)."""
    c2w = cams.c2w[i].double().cpu().numpy()
    fov = 2.0 * math.atan(0.5 * cams.height / float(cams.fy[i]))
    return c2w[:3, 3].copy(), matrix_to_quat(c2w[:3, :3]), fov, cams.width / cams.height
