"""The viser app of ``neural3d view``: each browser's camera is rendered through
:class:`~neural3d.viewer.scene.Scene` and shown as the page's background image.

While the camera moves the image is rendered at ``motion_scale`` of the chosen resolution;
once it has been still for ``still_after`` seconds it is rendered at full resolution. The page
has a sample slider (generative methods), the resolution, and the camera path controls: "add
keyframe" records the current view, "export camera path" writes the keyframes interpolated
over ``seconds`` at ``fps`` as a nerfstudio ``camera_path.json`` (never over an existing file).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from neural3d.cameras import Cameras
from neural3d.viewer.camera import viewer_cameras, viewer_pose
from neural3d.viewer.camera_path import CameraPath, interpolate, unused_path, write_camera_path
from neural3d.viewer.scene import Scene


class Viewer:
    """Serves ``scene`` on ``host:port`` (viser picks the next free port if it is taken: see
    :attr:`url`); camera paths go to ``camera_path_file`` (or the next free name beside it).
    ``resolution`` is the rendered image height when still (default: the scene's native)."""

    def __init__(self, scene: Scene, camera_path_file: str | Path, host: str = "127.0.0.1",
                 port: int = 8080, resolution: int | None = None, still_after: float = 0.3,
                 motion_scale: float = 0.25, log: Callable[[str], None] = print):
        import viser

        self.scene, self.out, self.log = scene, Path(camera_path_file), log
        self.still_after, self.motion_scale = still_after, motion_scale
        self.server = server = viser.ViserServer(host=host, port=port, verbose=False)
        self.index, self.version = 0, 0          # shown sample; bumped when the image changes
        self.keyframes: list[tuple[np.ndarray, np.ndarray, float, float]] = []
        self._frustums: list = []                # the keyframes drawn in the scene
        self._shown: dict[int, tuple[float, int, bool]] = {}
        self._stop = threading.Event()

        pos, wxyz, fov, _ = viewer_pose(scene.home)
        server.initial_camera.position = tuple(pos)
        server.initial_camera.look_at = (0.0, 0.0, 0.0)
        server.initial_camera.up = (0.0, 0.0, 1.0)
        server.initial_camera.fov = fov
        server.scene.set_up_direction("+z")

        gui = server.gui
        gui.add_markdown(f"**{scene.method.name}** "
                         f"{Path(scene.method.checkpoint_path or '').name}")
        if len(scene) > 1:
            sample = gui.add_slider("sample", 0, len(scene) - 1, 1, 0)

            @sample.on_update
            def _(_) -> None:
                self.index = int(sample.value)
                self._changed()
        res = resolution or scene.home.height
        self.resolution = gui.add_slider("resolution", 16, max(1024, res), 16, res)
        self.resolution.on_update(lambda _: self._changed())
        self.seconds = gui.add_number("seconds", 4.0, min=0.1, step=0.1)
        self.fps = gui.add_number("fps", 24, min=1, max=240, step=1)
        self.loop = gui.add_checkbox("loop", False)
        add = gui.add_button("add keyframe")
        clear = gui.add_button("clear keyframes")
        export = gui.add_button("export camera path")
        self.status = gui.add_markdown("no keyframes")

        @add.on_click
        def _(event) -> None:
            cam = event.client.camera
            self.add_keyframe(cam.position, cam.wxyz, cam.fov, cam.aspect)

        @clear.on_click
        def _(_) -> None:
            self.keyframes.clear()
            for handle in self._frustums:
                handle.remove()
            self._frustums.clear()
            self.status.content = "no keyframes"

        @export.on_click
        def _(_) -> None:
            try:
                path = self.export_camera_path()
                self.status.content = f"wrote `{path}`"
            except ValueError as exc:
                self.status.content = str(exc)

        self._thread = threading.Thread(target=self._render_loop, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://{self.server.get_host()}:{self.server.get_port()}"

    def _changed(self) -> None:
        self.version += 1

    # ------------------------------------------------------------------ camera path
    def add_keyframe(self, position, wxyz, fov: float, aspect: float) -> None:
        """Record a view (viewer convention, see :mod:`neural3d.viewer.camera`)."""
        k = len(self.keyframes)
        self.keyframes.append((np.asarray(position), np.asarray(wxyz), float(fov),
                               float(aspect)))
        self._frustums.append(self.server.scene.add_camera_frustum(
            f"/keyframes/{k}", fov=fov, aspect=aspect, scale=0.05 * float(
                np.linalg.norm(self.scene.home.centers[0].numpy())), color=(255, 120, 0),
            wxyz=tuple(wxyz), position=tuple(position)))
        self.status.content = f"{len(self.keyframes)} keyframe(s)"

    def keyframe_cameras(self) -> Cameras:
        """The keyframes at the current resolution and the first keyframe's aspect."""
        if not self.keyframes:
            raise ValueError("add a keyframe first")
        h, aspect = int(self.resolution.value), self.keyframes[0][3]
        return Cameras.cat([viewer_cameras(p, q, fov, aspect, h)
                            for p, q, fov, _ in self.keyframes])

    def export_camera_path(self) -> Path:
        """Write the keyframes, interpolated over ``seconds`` at ``fps``; returns the path."""
        keys = self.keyframe_cameras()
        seconds = float(self.seconds.value)
        frames = max(1, round(seconds * float(self.fps.value)))
        path = CameraPath(interpolate(keys, frames, self.loop.value), seconds, keys)
        written = write_camera_path(unused_path(self.out), path, self.loop.value)
        self.log(f"wrote {written} ({frames} frames, {len(keys)} keyframes)")
        return written

    # ------------------------------------------------------------------ rendering
    def _render_loop(self) -> None:
        while not self._stop.is_set():
            for client in list(self.server.get_clients().values()):
                try:
                    self._refresh(client)
                except AssertionError:   # no camera message from this client yet
                    pass
            time.sleep(0.01)

    def _refresh(self, client) -> None:
        cam = client.camera
        stamp = cam.update_timestamp
        full = time.time() - stamp >= self.still_after
        key = (stamp, self.version, full)
        if self._shown.get(client.client_id) == key:
            return
        h = int(self.resolution.value)
        if not full:
            h = max(8, round(h * self.motion_scale))
        cams = viewer_cameras(cam.position, cam.wxyz, cam.fov, cam.aspect, h)
        self._shown[client.client_id] = key
        try:
            img = self.scene.render(cams, self.index)[0]
        except Exception as exc:  # keep serving (e.g. out of memory at a high resolution)
            self.log(f"neural3d view: rendering {cams.width}x{cams.height} failed: {exc}")
            return
        client.scene.set_background_image(
            (img.clamp(0, 1) * 255).round().byte().numpy(), format="jpeg", jpeg_quality=90)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.server.stop()
