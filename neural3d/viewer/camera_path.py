"""nerfstudio ``camera_path.json`` files: written by ``neural3d view``, read by
``neural3d render --camera-path`` (and by nerfstudio's ``ns-render camera-path`` and viewer).

The format, as nerfstudio's viewer writes it and ``nerfstudio.cameras.camera_paths.
get_path_from_json`` reads it::

    {"camera_type": "perspective", "render_height": H, "render_width": W,
     "fps": 24, "seconds": 2.0, "is_cycle": false, "smoothness_value": 0.5,
     "default_fov": 50.0, "default_transition_sec": 2.0,
     "keyframes":   [{"matrix": [16 floats], "fov": deg, "aspect": W/H}, ...],
     "camera_path": [{"camera_to_world": [16 floats], "fov": deg, "aspect": W/H}, ...]}

Matrices are camera-to-world 4x4, row-major, in the **OpenGL** convention (camera y up, z
backwards); ``fov`` is the **vertical** field of view in degrees (``fy = H / 2 / tan(fov / 2)``),
square pixels, the principal point at the centre. Coordinates are the scene's world frame
(for neural3d: the frame of the training cameras). Only the ``perspective`` camera type is read.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from neural3d.cameras import Cameras, is_rigid, opencv_to_opengl, opengl_to_opencv
from neural3d.data.core import DataError
from neural3d.viewer.camera import matrix_to_quat, quat_to_matrix


@dataclass
class CameraPath:
    """The frames of a camera path (``cameras``, OpenCV, one image size), its duration and the
    keyframes it was interpolated from (None when the file holds none)."""

    cameras: Cameras
    seconds: float
    keyframes: Cameras | None = None

    @property
    def fps(self) -> float:
        return len(self.cameras) / self.seconds


def vertical_fov_deg(cams: Cameras) -> np.ndarray:
    """The vertical field of view ``[N]`` in degrees of each camera."""
    return np.degrees(2.0 * np.arctan(0.5 * cams.height / cams.fy.double().cpu().numpy()))


def _entries(cams: Cameras, matrix_key: str) -> list[dict]:
    gl = opencv_to_opengl(cams.c2w.double().cpu()).numpy()
    return [{matrix_key: [float(v) for v in gl[i].reshape(-1)], "fov": float(fov),
             "aspect": cams.width / cams.height}
            for i, fov in enumerate(vertical_fov_deg(cams))]


def camera_path_dict(path: CameraPath, loop: bool = False) -> dict:
    """The JSON document of a camera path (see the module docstring)."""
    cams, keys = path.cameras, path.keyframes
    fovs = vertical_fov_deg(keys if keys is not None else cams)
    return {"camera_type": "perspective", "render_height": cams.height,
            "render_width": cams.width, "fps": path.fps, "seconds": float(path.seconds),
            "is_cycle": bool(loop), "smoothness_value": 0.5, "default_fov": float(fovs[0]),
            "default_transition_sec": float(path.seconds) / max(1, len(fovs) - (not loop)),
            "keyframes": _entries(keys, "matrix") if keys is not None else [],
            "camera_path": _entries(cams, "camera_to_world")}


def write_camera_path(file: str | Path, path: CameraPath, loop: bool = False) -> Path:
    """Write ``path`` as a nerfstudio ``camera_path.json``; an existing file is never replaced
    (:class:`FileExistsError`: pick another name, e.g. with :func:`unused_path`)."""
    file = Path(file)
    file.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(camera_path_dict(path, loop), indent=2) + "\n"
    with open(file, "x") as f:   # "x": fails if the file exists
        f.write(text)
    return file


def unused_path(file: str | Path) -> Path:
    """``file`` if it does not exist, else the first free ``STEM_001.SUFFIX``, ``_002``, ..."""
    file = Path(file)
    candidate, i = file, 0
    while candidate.exists():
        i += 1
        candidate = file.with_name(f"{file.stem}_{i:03d}{file.suffix}")
    return candidate


def _cameras(entries, key: str, height: int, width: int, where: str) -> Cameras:
    c2w, f = [], []
    for i, e in enumerate(entries):
        try:
            m = np.asarray(e[key], dtype=np.float64).reshape(4, 4)
            fov = float(e["fov"])
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"{where}[{i}]: needs {key!r} (16 numbers) and 'fov' (degrees): "
                            f"{exc}") from exc
        ok, why = is_rigid(m)
        if not ok:
            raise DataError(f"{where}[{i}].{key}: not a camera pose: {why}")
        if not 0 < fov < 180:
            raise DataError(f"{where}[{i}].fov: must be in (0, 180) degrees, got {fov}")
        c2w.append(opengl_to_opencv(m))
        f.append(0.5 * height / math.tan(math.radians(fov) / 2))
    return Cameras(torch.from_numpy(np.stack(c2w)).float(), f, f, width / 2.0, height / 2.0,
                   width, height)


def read_camera_path(file: str | Path) -> CameraPath:
    """Read a nerfstudio ``camera_path.json`` (perspective cameras); bad content is a one-line
    :class:`~neural3d.data.DataError` naming the file and the key."""
    file = Path(file)
    try:
        doc = json.loads(file.read_text())
    except json.JSONDecodeError as exc:
        raise DataError(f"{file}: not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise DataError(f"{file}: expected a JSON object (a nerfstudio camera path)")
    kind = doc.get("camera_type", "perspective")
    if str(kind).lower() != "perspective":
        raise DataError(f"{file}: camera_type {kind!r} is not supported (perspective only)")
    try:
        height, width = int(doc["render_height"]), int(doc["render_width"])
        frames = doc["camera_path"]
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{file}: needs render_height, render_width (integers) and "
                        f"camera_path (a list): {exc}") from exc
    if height < 1 or width < 1:
        raise DataError(f"{file}: render size must be positive, got {width}x{height}")
    if not isinstance(frames, list) or not frames:
        raise DataError(f"{file}: camera_path: expected a non-empty list of cameras")
    seconds = doc.get("seconds", len(frames) / 24.0)
    if not isinstance(seconds, (int, float)) or not seconds > 0:
        raise DataError(f"{file}: seconds: must be a positive number, got {seconds!r}")
    cams = _cameras(frames, "camera_to_world", height, width, f"{file}: camera_path")
    keys = doc.get("keyframes") or None
    if keys is not None:
        keys = _cameras(keys, "matrix", height, width, f"{file}: keyframes")
    return CameraPath(cams, float(seconds), keys)


def _slerp(q0: np.ndarray, q1: np.ndarray, s: float) -> np.ndarray:
    if float(q0 @ q1) < 0:
        q1 = -q1
    dot = min(float(q0 @ q1), 1.0)
    theta = math.acos(dot)
    if theta < 1e-6:
        q = (1 - s) * q0 + s * q1
    else:
        q = (math.sin((1 - s) * theta) * q0 + math.sin(s * theta) * q1) / math.sin(theta)
    return q / np.linalg.norm(q)


def interpolate(keyframes: Cameras, frames: int, loop: bool = False) -> Cameras:
    """``frames`` cameras through ``keyframes``: positions on a Catmull-Rom spline, rotations
    slerped, the vertical field of view linear. Without ``loop`` the first and last frames are
    the first and last keyframes; with it the path closes (the last segment returns to the
    first keyframe, which the next frame after the last would be)."""
    if frames < 1:
        raise ValueError(f"interpolate: frames must be >= 1, got {frames}")
    K = len(keyframes)
    c2w = keyframes.c2w.double().cpu().numpy()
    P = c2w[:, :3, 3]
    Q = [matrix_to_quat(m[:3, :3]) for m in c2w]
    fov = np.radians(vertical_fov_deg(keyframes))
    segments = K if loop and K > 1 else K - 1
    idx = (lambda j: j % K) if loop else (lambda j: min(max(j, 0), K - 1))
    out_c2w, out_f = [], []
    for i in range(frames):
        t = i / frames if loop else (i / (frames - 1) if frames > 1 else 0.0)
        u = t * segments
        seg = min(int(u), max(segments - 1, 0))
        s = u - seg
        p0, p1, p2, p3 = (P[idx(seg + k)] for k in (-1, 0, 1, 2))
        pos = 0.5 * (2 * p1 + (-p0 + p2) * s + (2 * p0 - 5 * p1 + 4 * p2 - p3) * s * s
                     + (-p0 + 3 * p1 - 3 * p2 + p3) * s ** 3)
        m = np.eye(4)
        m[:3, :3] = quat_to_matrix(_slerp(Q[idx(seg)], Q[idx(seg + 1)], s))
        m[:3, 3] = pos
        out_c2w.append(m)
        fv = (1 - s) * fov[idx(seg)] + s * fov[idx(seg + 1)]
        out_f.append(0.5 * keyframes.height / math.tan(0.5 * fv))
    W, H = keyframes.width, keyframes.height
    return Cameras(torch.from_numpy(np.stack(out_c2w)).float(), out_f, out_f, W / 2.0, H / 2.0,
                   W, H)
