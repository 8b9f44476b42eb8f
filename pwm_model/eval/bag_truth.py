"""What a bag says really happened, for scoring one drive (``bag_eval.py``): the ego's future poses and the boxes
at each waypoint time (the clip store's labelling rule), and the camera frames that came after each forecast."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pwm_model.data.bag import DriveReader
from pwm_model.data.contract import fit_rgb, resize_rgb
from pwm_model.eval import metrics as M
from pwm_model.eval.bag_types import ForecastStrip, PlanRecord
from pwm_model.geometry import (
    PinholeCamera,
    boxes_to_ego_frame,
    interpolate_scalar,
    poses_to_ego_frame,
)

STRIP_CAP = 400  # decoded forecasts (and their true frames) kept for the report's strips at most
THUMB_MAX_WIDTH_PX = 320  # camera thumbnails kept for the report are at most this wide


def box_max_age_ns(reader: DriveReader, camera_period_ns: int) -> int | None:
    """Box sets older than this at a waypoint time count as missing (1.5 box periods + one camera period)."""
    period = reader.box_sets.median_period_ns()
    return int(1.5 * period) + camera_period_ns if period > 0 else None


def ground_truth(reader: DriveReader, t_ns: int, num_waypoints: int, waypoint_dt_ns: int,
                 max_age_ns: int | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The future at ``t_ns`` in the ego frame at t: ``(waypoints (K, 3), valid (K,), boxes (K, M, 7),
    boxes_valid (K, M))``; waypoint k is the odometry pose at ``t + k * waypoint_dt`` (invalid beyond the track)."""
    k_count = num_waypoints
    empty_boxes = (np.zeros((k_count, 0, 7), np.float32), np.zeros((k_count, 0), bool))
    pose, ok = reader.ego.poses_at(np.array([t_ns]))
    if not ok[0]:
        return np.zeros((k_count, 3)), np.zeros(k_count, bool), *empty_boxes
    ex, ey, eyaw = (float(v) for v in pose[0])
    ez = float(interpolate_scalar(np.array([t_ns]), reader.ego.t_ns, reader.ego.z_m)[0])
    wp_t = int(t_ns) + np.arange(1, k_count + 1, dtype=np.int64) * int(waypoint_dt_ns)
    wp, wp_ok = reader.ego.poses_at(wp_t)
    wp_ego = poses_to_ego_frame(wp, ex, ey, eyaw)
    wp_ego[~wp_ok] = 0.0
    sets = [reader.box_sets.at(int(wp_t[k]), interpolate=True, max_age_ns=max_age_ns) if wp_ok[k] else None
            for k in range(k_count)]
    m = max((len(b) for b in sets if b is not None), default=0)
    boxes = np.zeros((k_count, m, 7), np.float32)
    boxes_ok = np.zeros((k_count, m), bool)
    for k, b in enumerate(sets):
        if b is not None and len(b):
            boxes[k, :len(b)] = boxes_to_ego_frame(b.xyz_lwh_yaw, ex, ey, eyaw, ez)
            boxes_ok[k, :len(b)] = True
    return wp_ego, wp_ok, boxes, boxes_ok


def bag_camera(reader: DriveReader, camera: PinholeCamera) -> PinholeCamera:
    """The camera to draw with: the bag's own intrinsics (sensor_msgs/CameraInfo K) when it has them, with the
    configured mounting in base_link; else ``camera`` (``overlay_camera.overlay_camera``)."""
    from pwm_model.eval.overlay_camera import overlay_camera

    return overlay_camera(reader, camera)[0]


def boxes_now(reader: DriveReader, t_ns: int, max_age_ns: int | None) -> np.ndarray:
    b = reader.box_sets.at(int(t_ns), interpolate=True, max_age_ns=max_age_ns)
    if not len(b) or not len(reader.ego):
        return np.zeros((0, 7), np.float32)
    pose, _ = reader.ego.poses_at(np.array([t_ns]))
    return boxes_to_ego_frame(b.xyz_lwh_yaw, *(float(v) for v in pose[0])).astype(np.float32)


def pad_boxes(rows: list[np.ndarray], valid: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    m = max((r.shape[1] for r in rows), default=0)
    out = np.zeros((len(rows), k, m, 7), np.float32)
    ok = np.zeros((len(rows), k, m), bool)
    for i, (r, v) in enumerate(zip(rows, valid)):
        out[i, :, :r.shape[1]] = r
        ok[i, :, :r.shape[1]] = v
    return out, ok


def thumbnail(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if w <= THUMB_MAX_WIDTH_PX:
        return img.copy()
    return resize_rgb(img, round(h * THUMB_MAX_WIDTH_PX / w), THUMB_MAX_WIDTH_PX)


# ----------------------------------------------------------------------------------------------------
# Forecast scoring against the frames that really came

@dataclass
class PendingForecast:
    index: int
    t_ns: int
    targets_ns: np.ndarray  # (F,)
    forecast: np.ndarray  # (F, h, w, 3)
    current: np.ndarray  # (h, w, 3) the frame at t, for copy-last-frame
    truth: np.ndarray  # (F, h, w, 3)
    filled: np.ndarray  # (F,) bool
    surprise: float


class ForecastScorer:
    def __init__(self, model_dt_ns: int, tolerance_ns: int) -> None:
        self.model_dt_ns, self.tol = model_dt_ns, tolerance_ns
        self.pending: list[PendingForecast] = []
        self.t_ns: list[int] = []
        self.psnr: list[np.ndarray] = []
        self.ssim: list[np.ndarray] = []
        self.copy_psnr: list[np.ndarray] = []
        self.copy_ssim: list[np.ndarray] = []
        self.strips: list[ForecastStrip] = []

    def add(self, index: int, rec: PlanRecord, rgb: np.ndarray) -> None:
        fc = np.asarray(rec.forecast_rgb, np.uint8)
        f, h, w = fc.shape[:3]
        targets = rec.t_ns + np.arange(1, f + 1, dtype=np.int64) * self.model_dt_ns
        self.pending.append(PendingForecast(index, rec.t_ns, targets, fc, fit_rgb(rgb, h, w),
                                     np.zeros_like(fc), np.zeros(f, bool), rec.surprise))

    def frame(self, t_ns: int, rgb: np.ndarray | None) -> None:
        keep = []
        for p in self.pending:
            hit = np.flatnonzero(~p.filled & (np.abs(p.targets_ns - t_ns) <= self.tol))
            if len(hit) and rgb is not None:
                small = fit_rgb(rgb, *p.forecast.shape[1:3])
                p.truth[hit] = small
                p.filled[hit] = True
            if p.filled.all() or p.targets_ns[-1] < t_ns - self.tol:
                self._finish(p)
            else:
                keep.append(p)
        self.pending = keep

    def needs(self, t_ns: int) -> bool:
        """Whether a pending forecast waits for the frame at ``t_ns`` (which must then be decoded)."""
        return any(np.any(~p.filled & (np.abs(p.targets_ns - t_ns) <= self.tol)) for p in self.pending)

    def close(self) -> None:
        for p in self.pending:
            self._finish(p)
        self.pending = []

    def _finish(self, p: PendingForecast) -> None:
        nan = np.full(len(p.filled), math.nan)
        psnr, ssim, cpsnr, cssim = nan.copy(), nan.copy(), nan.copy(), nan.copy()
        if p.filled.any():
            f = p.filled
            psnr[f] = M.psnr_db(p.forecast[f], p.truth[f])
            ssim[f] = M.ssim(p.forecast[f], p.truth[f])
            copy = np.repeat(p.current[None], int(f.sum()), axis=0)  # copy-last-frame: the frame at t, repeated
            cpsnr[f] = M.psnr_db(copy, p.truth[f])
            cssim[f] = M.ssim(copy, p.truth[f])
        self.t_ns.append(p.t_ns)
        self.psnr.append(psnr)
        self.ssim.append(ssim)
        self.copy_psnr.append(cpsnr)
        self.copy_ssim.append(cssim)
        if len(self.strips) < STRIP_CAP:
            self.strips.append(ForecastStrip(p.index, p.t_ns, p.truth, p.forecast, psnr, p.surprise, p.current))

    def arrays(self, f: int) -> tuple[np.ndarray, ...]:
        def stack(rows: list[np.ndarray]) -> np.ndarray:
            return np.stack(rows) if rows else np.zeros((0, f))
        return (np.array(self.t_ns, np.int64), stack(self.psnr), stack(self.ssim), stack(self.copy_psnr),
                stack(self.copy_ssim))


