"""The drive as a video with the planned and the true future path drawn on the camera image (OpenCV only).

    video = OverlayVideo("out/eval/overlay.mp4", fps=10.0)
    video.add(draw_overlay(rgb, camera, plan_xy, truth_xy, "t 3.2 s  8.1 m/s"))
    info = video.close()   # VideoInfo(path, codec, frames, ...) or None when no frame was added

The MP4 is H.264 (``avc1``) where the local OpenCV has an H.264 encoder: every player and browser plays it. The
pip OpenCV has none; there the MP4 is MPEG-4 Part 2 (``mp4v``: fast; VLC and ffplay play it, browsers do not) and a
VP8 WebM companion (``overlay.webm``, a few times faster to encode than VP9) is written for the report's page.
``vp09`` (VP9 in MP4: every browser, one file, slow to encode) can be asked for. Files are written under temporary
names and renamed at the end.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from pwm_model.data.contract import camera_on_image
from pwm_model.errors import DataError
from pwm_model.geometry import PinholeCamera

CODECS = ("avc1", "vp09", "mp4v")  # MP4 codecs that can be asked for
AUTO_CODECS = ("avc1", "mp4v")  # "auto": H.264 where OpenCV can encode it, else MPEG-4 Part 2 (+ the WebM)
BROWSER_CODECS = ("avc1", "vp09")  # MP4s a browser's <video> plays
WEB_FOURCC = "VP80"  # the WebM companion of a browser-unfriendly MP4
PLAN_RGB = (40, 230, 80)  # the planned path (green, as in the node's overlay and the report's figures)
TRUTH_RGB = (255, 60, 200)  # the path the car really drove (magenta)
WAYPOINT_RGB = (255, 200, 30)
BAR_PX = 18  # height of the caption bar under each frame
NEAR_M = 0.5  # path points closer than this to the camera are not drawn


@dataclass
class VideoInfo:
    path: Path  # the MP4
    codec: str
    frames: int
    fps: float
    width_px: int
    height_px: int
    web_path: Path | None = None  # the VP8 WebM written beside an MP4 that browsers do not play

    @property
    def browser_playable(self) -> bool:
        return self.codec in BROWSER_CODECS or self.web_path is not None


def _densify(xy_m: np.ndarray, step_m: float = 0.25) -> np.ndarray:
    """The polyline origin -> xy_m[0] -> ... as points at most ``step_m`` apart (M, 2)."""
    pts = np.vstack([np.zeros((1, 2)), np.asarray(xy_m, np.float64).reshape(-1, 2)])
    seg = np.diff(pts, axis=0)  # (S, 2)
    n = np.maximum(1, np.ceil(np.linalg.norm(seg, axis=1) / step_m).astype(int))  # (S,) points per segment
    start = np.repeat(pts[:-1], n, axis=0)
    frac = np.concatenate([np.arange(1, k + 1) / k for k in n])[:, None]
    return np.vstack([pts[:1], start + np.repeat(seg, n, axis=0) * frac])


def _ground_uv(camera: PinholeCamera, xy_m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pts = np.concatenate([xy_m, np.zeros((len(xy_m), 1))], axis=1)  # (M, 3) on the ground, base_link
    uv, front = camera.project(pts, near_m=NEAR_M)
    return uv, front & camera.in_image(np.nan_to_num(uv, nan=-1.0))


def _draw_path(img: np.ndarray, camera: PinholeCamera, xy_m: np.ndarray, rgb: tuple[int, int, int],
               thickness: int, dots: bool) -> None:
    uv, ok = _ground_uv(camera, _densify(xy_m))
    # one polyline per run of consecutive visible points
    edges = np.flatnonzero(np.diff(np.concatenate([[0], ok.astype(np.int8), [0]])))
    runs = [np.round(uv[a:b]).astype(np.int32) for a, b in zip(edges[::2], edges[1::2]) if b - a >= 2]
    if runs:
        cv2.polylines(img, runs, False, rgb, thickness, cv2.LINE_AA)
    if dots and len(xy_m):
        wuv, wok = _ground_uv(camera, np.asarray(xy_m, np.float64).reshape(-1, 2))
        for u, v in np.round(wuv[wok]).astype(int):
            cv2.circle(img, (int(u), int(v)), thickness + 1, WAYPOINT_RGB, -1, cv2.LINE_AA)


def draw_overlay(rgb: np.ndarray, camera: PinholeCamera, plan_xy: np.ndarray | None, truth_xy: np.ndarray | None,
                 caption: str = "", caption_bar: bool = True) -> np.ndarray:
    """A copy of ``rgb`` (H, W, 3) with the true future path (magenta) and the plan (green, waypoints yellow) drawn
    on the ground plane, and ``caption`` in a bar underneath (H + BAR_PX rows) when ``caption_bar``."""
    img = np.ascontiguousarray(rgb).copy()
    h, w = img.shape[:2]
    cam = camera_on_image(camera, h, w)  # the contract's aspect rule where the sizes differ
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
    """An MP4 (and, where needed, its WebM companion) written frame by frame (RGB in); the frame size is fixed by
    the first frame."""

    def __init__(self, path: str | os.PathLike[str], fps: float, codec: str = "auto") -> None:
        if codec != "auto" and codec not in CODECS:
            raise DataError(f"video codec {codec!r} is not supported: use auto or one of {', '.join(CODECS)}")
        self.path = Path(path)
        self.fps = float(fps)
        self._codecs = AUTO_CODECS if codec == "auto" else (codec,)
        self._writers: list[tuple[cv2.VideoWriter, Path, Path]] = []  # (writer, temporary path, final path)
        self.codec = ""
        self.frames = 0
        self._size = (0, 0)

    def _writer(self, final: Path, fourccs: tuple[str, ...]) -> str:
        tmp = final.with_name(f".{final.stem}.{os.getpid()}.partial{final.suffix}")
        try:
            with _quiet_stderr():
                for fourcc in fourccs:
                    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), self.fps, self._size)
                    if writer.isOpened():
                        self._writers.append((writer, tmp, final))
                        return fourcc
                    writer.release()
        except BaseException:  # interrupted (Ctrl-C, SIGTERM) after OpenCV created the file, before it was tracked
            if not any(t == tmp for _, t, _ in self._writers):
                tmp.unlink(missing_ok=True)
            raise
        tmp.unlink(missing_ok=True)
        return ""

    def _open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.codec = self._writer(self.path, self._codecs)
        if not self.codec:
            raise DataError(f"OpenCV cannot write an MP4 video here (tried {', '.join(self._codecs)}): run without "
                            "the video (--no-video)")
        if self.codec not in BROWSER_CODECS:
            self._writer(self.path.with_suffix(".webm"), (WEB_FOURCC,))  # best effort: the MP4 stays either way

    def add(self, rgb: np.ndarray) -> None:
        h, w = rgb.shape[:2]
        if not self._writers:
            self._size = (w - w % 2, h - h % 2)  # even sizes keep every encoder happy
            self._open()
        if (w, h) != self._size:
            rgb = cv2.resize(rgb, self._size, interpolation=cv2.INTER_AREA)
        bgr = np.ascontiguousarray(rgb[..., ::-1])
        for writer, _, _ in self._writers:
            writer.write(bgr)
        self.frames += 1

    def close(self) -> VideoInfo | None:
        """Finish the files and move them into place; None when no frame was added."""
        if not self._writers:
            return None
        for writer, tmp, final in self._writers:
            writer.release()
            os.replace(tmp, final)
        web = next((final for _, _, final in self._writers if final.suffix == ".webm"), None)
        self._writers = []
        return VideoInfo(self.path, self.codec, self.frames, self.fps, *self._size, web_path=web)

    def discard(self) -> None:
        for writer, tmp, _ in self._writers:
            writer.release()
            tmp.unlink(missing_ok=True)
        self._writers = []
