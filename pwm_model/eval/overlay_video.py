"""The drive as a video with the planned and the true future path drawn on the camera image (OpenCV only).

    video = OverlayVideo("out/eval/overlay.mp4", fps=10.0)
    video.add(draw_overlay(rgb, camera, plan_xy, truth_xy, "t 3.2 s  8.1 m/s"))
    info = video.close()   # VideoInfo(path, codec, frames) or None when no frame was added

Codecs, first available wins: H.264 (``avc1``: every player, needs an OpenCV build with an H.264 encoder), VP9 in
MP4 (``vp09``: every browser, built into the pip OpenCV, slower to encode), MPEG-4 Part 2 (``mp4v``: fast, but
browsers do not play it; VLC and ffplay do). The file is written under a temporary name and renamed at the end.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pwm_model.errors import DataError
from pwm_model.geometry import PinholeCamera

CODECS = ("avc1", "vp09", "mp4v")  # preference order for "auto"
BROWSER_CODECS = ("avc1", "vp09")  # the ones a browser's <video> plays
PLAN_RGB = (40, 230, 80)  # the planned path (green, as in the node's overlay and the report's figures)
TRUTH_RGB = (255, 60, 200)  # the path the car really drove (magenta)
WAYPOINT_RGB = (255, 200, 30)
BAR_PX = 18  # height of the caption bar under each frame
NEAR_M = 0.5  # path points closer than this to the camera are not drawn


@dataclass
class VideoInfo:
    path: Path
    codec: str
    frames: int
    fps: float
    width_px: int
    height_px: int

    @property
    def browser_playable(self) -> bool:
        return self.codec in BROWSER_CODECS


def _densify(xy_m: np.ndarray, step_m: float = 0.25) -> np.ndarray:
    """The polyline origin -> xy_m[0] -> ... as points at most ``step_m`` apart (M, 2)."""
    pts = np.vstack([np.zeros((1, 2)), np.asarray(xy_m, np.float64).reshape(-1, 2)])
    out = [pts[:1]]
    for a, b in zip(pts[:-1], pts[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step_m)))
        out.append(a + (b - a) * (np.arange(1, n + 1)[:, None] / n))
    return np.vstack(out)


def _ground_uv(camera: PinholeCamera, xy_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pts = np.concatenate([xy_m, np.zeros((len(xy_m), 1))], axis=1)  # (M, 3) on the ground, base_link
    uv, front = camera.project(pts, near_m=NEAR_M)
    return uv, front & camera.in_image(np.nan_to_num(uv, nan=-1.0))


def _draw_path(img: np.ndarray, camera: PinholeCamera, xy_m: np.ndarray, rgb: tuple[int, int, int],
               thickness: int, dots: bool) -> None:
    uv, ok = _ground_uv(camera, _densify(xy_m))
    for i in range(len(uv) - 1):
        if ok[i] and ok[i + 1]:
            p0, p1 = np.round(uv[i]).astype(int), np.round(uv[i + 1]).astype(int)
            cv2.line(img, (int(p0[0]), int(p0[1])), (int(p1[0]), int(p1[1])), rgb, thickness, cv2.LINE_AA)
    if dots and len(xy_m):
        wuv, wok = _ground_uv(camera, np.asarray(xy_m, np.float64).reshape(-1, 2))
        for (u, v), good in zip(wuv, wok):
            if good:
                cv2.circle(img, (int(round(u)), int(round(v))), thickness + 1, WAYPOINT_RGB, -1, cv2.LINE_AA)


def draw_overlay(rgb: np.ndarray, camera: PinholeCamera, plan_xy: np.ndarray | None, truth_xy: np.ndarray | None,
                 caption: str = "", caption_bar: bool = True) -> np.ndarray:
    """A copy of ``rgb`` (H, W, 3) with the true future path (magenta) and the plan (green, waypoints yellow) drawn
    on the ground plane, and ``caption`` in a bar underneath (H + BAR_PX rows) when ``caption_bar``."""
    img = np.ascontiguousarray(rgb).copy()
    h, w = img.shape[:2]
    cam = camera if (camera.width_px, camera.height_px) == (w, h) else camera.scaled(w, h)
    thickness = max(1, round(w / 200))
    if truth_xy is not None and len(truth_xy):
        _draw_path(img, cam, truth_xy, TRUTH_RGB, thickness, dots=False)
    if plan_xy is not None and len(plan_xy):
        _draw_path(img, cam, plan_xy, PLAN_RGB, thickness, dots=True)
    if not caption_bar:
        return img
    bar = np.zeros((BAR_PX, w, 3), np.uint8)
    scale = 0.36 if w < 400 else 0.45
    cv2.putText(bar, caption, (3, BAR_PX - 5), cv2.FONT_HERSHEY_SIMPLEX, scale, (235, 235, 235), 1, cv2.LINE_AA)
    return np.vstack([img, bar])


@contextlib.contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence FFmpeg's own messages (printed by C code) while encoders are probed."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class OverlayVideo:
    """An MP4 written frame by frame (RGB in); the frame size is fixed by the first frame."""

    def __init__(self, path: str | os.PathLike[str], fps: float, codec: str = "auto") -> None:
        if codec != "auto" and codec not in CODECS:
            raise DataError(f"video codec {codec!r} is not supported: use auto or one of {', '.join(CODECS)}")
        self.path = Path(path)
        self.fps = float(fps)
        self._codecs = CODECS if codec == "auto" else (codec,)
        self._tmp = self.path.with_name(f".{self.path.stem}.{os.getpid()}.partial{self.path.suffix}")
        self._writer: cv2.VideoWriter | None = None
        self.codec = ""
        self.frames = 0
        self._size = (0, 0)

    def _open(self, width: int, height: int) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _quiet_stderr():
            for fourcc in self._codecs:
                writer = cv2.VideoWriter(str(self._tmp), cv2.VideoWriter_fourcc(*fourcc), self.fps, (width, height))
                if writer.isOpened():
                    self._writer, self.codec = writer, fourcc
                    return
                writer.release()
        self._tmp.unlink(missing_ok=True)
        raise DataError(f"OpenCV cannot write an MP4 video here (tried {', '.join(self._codecs)}): run without the "
                        "video (--no-video)")

    def add(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        if self._writer is None:
            # even sizes keep every encoder happy
            self._size = (w - w % 2, h - h % 2)
            self._open(*self._size)
        if (w, h) != self._size:
            rgb = cv2.resize(rgb, self._size, interpolation=cv2.INTER_AREA)
        self._writer.write(np.ascontiguousarray(rgb[..., ::-1]))
        self.frames += 1

    def close(self) -> VideoInfo | None:
        """Finish the file and move it into place; None when no frame was added."""
        if self._writer is None:
            return None
        self._writer.release()
        self._writer = None
        os.replace(self._tmp, self.path)
        return VideoInfo(self.path, self.codec, self.frames, self.fps, *self._size)

    def discard(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        self._tmp.unlink(missing_ok=True)
