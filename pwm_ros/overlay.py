"""Draw a planned path onto the camera image through the pinhole camera model (numpy + OpenCV, no ROS)."""

from __future__ import annotations

import cv2
import numpy as np

from pwm_model.data.contract import camera_on_image
from pwm_model.geometry import PinholeCamera

PATH_RGB = (40, 230, 80)
WAYPOINT_RGB = (255, 200, 30)


def densify(xy_m: np.ndarray, step_m: float = 0.25) -> np.ndarray:
    """Points along the polyline origin -> xy_m[0] -> ... (M, 2), at most ``step_m`` apart."""
    pts = np.vstack([np.zeros((1, 2)), np.asarray(xy_m, np.float64).reshape(-1, 2)])
    out = [pts[:1]]
    for a, b in zip(pts[:-1], pts[1:]):
        n = max(1, int(np.ceil(np.linalg.norm(b - a) / step_m)))
        out.append(a + (b - a) * (np.arange(1, n + 1)[:, None] / n))
    return np.vstack(out)


def project_path(camera: PinholeCamera, waypoints_xyyaw: np.ndarray, near_m: float = 0.5
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Ground points of the path (z = 0 in base_link) in pixels: ``(uv (M, 2), visible (M,))``.

    Visible means in front of the camera by ``near_m`` and inside the image.
    """
    xy = densify(np.asarray(waypoints_xyyaw)[:, :2])
    pts = np.concatenate([xy, np.zeros((len(xy), 1))], axis=1)  # (M, 3) on the ground
    uv, in_front = camera.project(pts, near_m=near_m)
    visible = in_front & camera.in_image(np.nan_to_num(uv, nan=-1.0))
    return uv, visible


def draw_path(rgb: np.ndarray, camera: PinholeCamera, waypoints_xyyaw: np.ndarray) -> np.ndarray:
    """A copy of ``rgb`` (H, W, 3) with the path and its waypoints drawn; ``camera`` is fitted to the image
    (``contract.camera_on_image``: the aspect rule where the sizes differ)."""
    img = np.ascontiguousarray(rgb).copy()
    h, w = img.shape[:2]
    cam = camera_on_image(camera, h, w)  # the contract's aspect rule where the sizes differ
    thickness = max(1, round(w / 160))
    uv, visible = project_path(cam, waypoints_xyyaw)
    for i in range(len(uv) - 1):  # segments with both ends visible
        if visible[i] and visible[i + 1]:
            p0, p1 = np.round(uv[i]).astype(int), np.round(uv[i + 1]).astype(int)
            cv2.line(img, tuple(int(v) for v in p0), tuple(int(v) for v in p1), PATH_RGB, thickness, cv2.LINE_AA)
    wp = np.asarray(waypoints_xyyaw, np.float64)[:, :2]
    wp_uv, wp_front = cam.project(np.concatenate([wp, np.zeros((len(wp), 1))], axis=1), near_m=0.5)
    wp_visible = wp_front & cam.in_image(np.nan_to_num(wp_uv, nan=-1.0))
    for (u, v), ok in zip(wp_uv, wp_visible):
        if ok:
            cv2.circle(img, (int(round(u)), int(round(v))), thickness + 2, WAYPOINT_RGB, -1, cv2.LINE_AA)
    return img
