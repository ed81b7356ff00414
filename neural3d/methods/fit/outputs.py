"""What a fit writes for people to look at: held-out comparisons, turntables and camera paths."""

from __future__ import annotations

from pathlib import Path

import torch

from neural3d.export.media import write_image_rows, write_video


def save_renders_png(path: Path, truth: torch.Tensor, pred: torch.Tensor, max_rows: int = 8
                     ) -> Path:
    """Rows of ``truth | render | error (|diff| x 4)`` for up to ``max_rows`` views."""
    n = min(len(truth), max_rows)
    rows = []
    for i in range(n):
        err = ((truth[i] - pred[i]).abs().mean(-1, keepdim=True) * 4).clamp(0, 1).expand(-1, -1, 3)
        rows.append(torch.stack([truth[i], pred[i], err]))
    return write_image_rows(path, rows)


def path_cameras(rec: dict, kind: str = "orbit", n: int = 48, width: int | None = None):
    """Cameras on an orbit (turntable) or the SRN-style spiral around the origin, with the
    intrinsics of the training cameras (optionally rescaled to ``width``)."""
    from neural3d.cameras import Cameras, orbit_path, spiral_path

    elev = float(min(max(rec.get("elevation_deg", 20.0), 10.0), 60.0))
    if kind == "orbit":
        c2w = orbit_path(n, radius=rec["radius"], elevation_deg=elev)
    elif kind == "spiral":
        c2w = spiral_path(n, radius=rec["radius"], turns=1.0, min_elevation_deg=5.0,
                          max_elevation_deg=75.0)
    else:
        raise ValueError(f"unknown camera path {kind!r} (orbit, spiral)")
    cams = Cameras(c2w, rec["fx"], rec["fy"], rec["cx"], rec["cy"], rec["width"], rec["height"])
    if width is not None and width != rec["width"]:
        cams = cams.scaled(width, round(rec["height"] * width / rec["width"]))
    return cams


@torch.no_grad()
def write_turntable(path: Path, model, cam_rec: dict, frames: int = 48,
                    chunk: int = 8192, kind: str = "orbit", width: int | None = None) -> Path:
    cams = path_cameras(cam_rec, kind, frames, width)
    imgs = [model.render_image(cams[i], chunk) for i in range(len(cams))]
    return write_video(path, imgs)
