"""Rosbag replay evaluation: plans scored against the bag's own future, offline or from a live run's recording.

    runner = PolicyRunner.from_model_dir("out/models/pwm-tiny-onnx", cfg.runtime)
    ev = evaluate_bag("out/sample_drive/drive_0000", OfflinePlanner(runner, cfg, rate_hz=10.0), cfg, runner.camera,
                      out_dir="out/eval")
    metrics = summarize([ev])

Offline, the one ``PolicyRunner`` plans from the bag's camera frames at the planning rate on bag time, with the
ego speed and acceleration from the bag's odometry and the route command at each frame (what the node is fed).
Live, the plans are the node's recorded ``~/trajectory`` messages (``predictions.py``), matched to camera frames by
stamp. Either way each plan at stamp t is scored against the ground truth the clip store would label at t (the
odometry's future poses at ``t + k * waypoint_dt`` in the ego frame at t, the boxes at those times) with
``metrics.py``: L2 in both protocols and collision; constant velocity at the odometry speed is scored beside it.
Decoded forecasts (every ``forecast_every``-th plan) are compared with the camera frames that really came at
``t + k * model_dt`` (PSNR / SSIM, copy-last-frame beside it). Camera frames are streamed once; the overlay video is
written on the way.
"""

from __future__ import annotations

import functools
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from pwm_model.config import COMMANDS, PwmConfig, TopicsConfig
from pwm_model.data.bag import DriveReader
from pwm_model.errors import DataError
from pwm_model.eval import metrics as M
from pwm_model.eval.baselines import constant_velocity
from pwm_model.eval.overlay_video import OverlayVideo, VideoInfo, draw_overlay
from pwm_model.eval.predictions import RecordedPredictions
from pwm_model.geometry import (
    PinholeCamera,
    boxes_to_ego_frame,
    from_ego_frame,
    interpolate_scalar,
    poses_to_ego_frame,
    to_ego_frame,
)
from pwm_model.runtime.types import EgoInput

log = logging.getLogger(__name__)

STRIP_CAP = 400  # decoded forecasts (and their true frames) kept for the report's strips at most
THUMB_MAX_WIDTH_PX = 320  # camera thumbnails kept for the report are at most this wide
LATENCY_PLAUSIBLE_MS = 60_000.0  # recorded arrival minus camera stamp beyond this: not bag time (wall clock)
WORST_SEPARATION_S = 2.0  # the worst moments shown are at least this far apart
CANDIDATES_PER_PICK = 8  # seconds of bag time kept as candidates per worst moment wanted
RATE_TOLERANCE = 0.1  # a frame is due for planning this share of a planning period early (camera jitter)


@dataclass
class EvalOptions:
    """How a bag is evaluated (the planning rate defaults to the model's ``runtime.planning_rate_hz``)."""

    forecast_every: int = 5  # decode the forecast of every n-th plan for PSNR / SSIM (0: never)
    video: bool = True  # write the overlay video
    video_codec: str = "auto"  # auto | avc1 | vp09 | mp4v (overlay_video.CODECS)
    video_max_frames: int = 1200  # longer drives are sped up (every n-th frame) to stay within this
    samples: int = 6  # plans shown in bird's-eye view, evenly spread over the drive
    worst: int = 3  # worst moments kept (highest surprise, largest L2)
    progress: bool = True  # a line on stderr every tenth of the drive
    progress_prefix: str = ""  # put before each progress line


@dataclass
class PlanRecord:
    """One plan, from the runner (offline) or from the recording (live)."""

    t_ns: int
    waypoints_xyyaw: np.ndarray  # (K, 3)
    surprise: float = math.nan
    latency_ms: float = math.nan
    warming_up: bool = False
    forecast_rgb: np.ndarray | None = None  # (F, h, w, 3) decoded forecast frames t+1 .. t+F (sampled plans)


@dataclass
class Moment:
    """A plan picked for the report, with the camera frame it was planned from (path drawn)."""

    index: int  # row in the plan arrays
    t_ns: int
    why: str  # "sample" | "surprise" | "l2"
    value: float
    thumb_rgb: np.ndarray


@dataclass
class ForecastStrip:
    index: int  # row in the plan arrays
    t_ns: int
    truth_rgb: np.ndarray  # (F, h, w, 3) camera frames at t + k * model_dt (zeros where none came)
    forecast_rgb: np.ndarray  # (F, h, w, 3)
    psnr_db: np.ndarray  # (F,) NaN where no frame came (the drive ended)
    surprise: float
    current_rgb: np.ndarray | None = None  # (h, w, 3) the frame at t the forecast started from


@dataclass
class BagEvaluation:
    """Everything one bag's evaluation produced (arrays row-aligned, one row per plan)."""

    bag: str
    mode: str  # offline | live
    frames: int
    start_ns: int
    end_ns: int
    has_odometry: bool
    has_boxes: bool
    waypoint_dt_s: float
    model_dt_s: float
    plan_t_ns: np.ndarray  # (N,)
    plans: np.ndarray  # (N, K, 3)
    truth: np.ndarray  # (N, K, 3)
    truth_valid: np.ndarray  # (N, K)
    boxes: np.ndarray  # (N, K, M, 7) ego frame at t
    boxes_valid: np.ndarray  # (N, K, M)
    boxes_now: list[np.ndarray]  # per plan (M_i, 7) boxes at t, ego frame at t
    cv: np.ndarray  # (N, K, 3) constant velocity
    speed_mps: np.ndarray  # (N,)
    command: np.ndarray  # (N,)
    surprise: np.ndarray  # (N,)
    latency_ms: np.ndarray  # (N,)
    latency_kind: str  # "runner" (offline: PolicyRunner.step) | "end-to-end" (live: arrival - camera stamp)
    warming_up: np.ndarray  # (N,) bool
    forecast_t_ns: np.ndarray  # (S,)
    forecast_psnr: np.ndarray  # (S, F)
    forecast_ssim: np.ndarray  # (S, F)
    copy_psnr: np.ndarray  # (S, F)
    copy_ssim: np.ndarray  # (S, F)
    strips: list[ForecastStrip]
    moments: list[Moment]
    video: VideoInfo | None
    video_speedup: int
    notes: list[str] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. the node's diagnostics in live mode

    @property
    def name(self) -> str:
        return Path(self.bag).name


# ----------------------------------------------------------------------------------------------------
# Plan sources

class OfflinePlanner:
    """Runs the ``PolicyRunner`` at ``rate_hz`` on bag time; decodes every ``forecast_every``-th forecast."""

    mode = "offline"
    latency_kind = "runner"

    def __init__(self, runner: Any, rate_hz: float, forecast_every: int = 5) -> None:
        if not rate_hz > 0:
            raise DataError(f"the planning rate must be positive, got {rate_hz}")
        self.runner = runner
        self.period_ns = round(1e9 / rate_hz)
        self.forecast_every = int(forecast_every)
        self._due_ns: int | None = None
        self._count = 0

    def start(self, reader: DriveReader) -> None:
        self.runner.reset()
        self._due_ns, self._count, self._last_ns, self._seen_ns = None, 0, None, None
        self.time_jumps = 0

    def wants(self, t_ns: int) -> bool:
        return self._due_ns is None or t_ns >= self._due_ns - RATE_TOLERANCE * self.period_ns

    def plan(self, t_ns: int, rgb: np.ndarray | None, ego: EgoInput) -> PlanRecord | None:
        if self._seen_ns is not None and t_ns < self._seen_ns:
            self.runner.reset()  # time went backwards (a looped recording): the node resets its history too
            self._due_ns, self._last_ns = None, None
            self.time_jumps += 1
        self._seen_ns = t_ns
        if rgb is None or (self._last_ns is not None and t_ns <= self._last_ns) or not self.wants(t_ns):
            return None  # not due yet, or a repeated frame (the node skips those too)
        self._last_ns = t_ns
        due = t_ns if self._due_ns is None else self._due_ns
        self._due_ns = due + self.period_ns if t_ns - due < self.period_ns else t_ns + self.period_ns
        p = self.runner.step(rgb, t_ns, ego)
        forecast = None
        if self.forecast_every > 0 and self._count % self.forecast_every == 0 and len(p.forecast_tokens):
            forecast = self.runner.forecast_frames(p)
        self._count += 1
        return PlanRecord(int(p.t_ns), np.asarray(p.waypoints_xyyaw, np.float64), float(p.surprise),
                          float(p.timings_ms.get("total", math.nan)), bool(p.warming_up), forecast)


class RecordedPlans:
    """The plans of a predictions bag, handed out at the camera frames whose stamps they carry."""

    mode = "live"
    latency_kind = "end-to-end"

    def __init__(self, predictions: RecordedPredictions) -> None:
        self.predictions = predictions
        self.matched = 0

    def start(self, reader: DriveReader) -> None:
        self.matched = 0
        stamps = set(reader.frame_stamps().tolist())  # cheap: no image is decoded
        if not stamps & set(self.predictions.plans):
            raise DataError(f"none of the recorded plans in {self.predictions.path} matches a camera frame of "
                            f"{reader.path} by stamp: were they recorded while replaying this bag?")

    def wants(self, t_ns: int) -> bool:
        return t_ns in self.predictions.plans

    def plan(self, t_ns: int, rgb: np.ndarray | None, ego: EgoInput) -> PlanRecord | None:
        rec = self.predictions.plans.get(t_ns)
        if rec is None:
            return None
        self.matched += 1
        return PlanRecord(t_ns, rec.waypoints_xyyaw, rec.surprise, (rec.receive_ns - rec.t_ns) / 1e6)


# ----------------------------------------------------------------------------------------------------
# Ground truth (the clip store's labelling rule, pwm_model/data/clips.py)

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
    configured mounting in base_link; else ``camera``."""
    info = reader.camera_info
    if not info or info["width_px"] <= 0 or info["height_px"] <= 0:
        return camera
    k = np.asarray(info["K"], np.float64)
    if not (np.all(np.isfinite(k)) and k[0, 0] > 0 and k[1, 1] > 0):
        return camera
    return PinholeCamera(int(info["width_px"]), int(info["height_px"]), float(k[0, 0]), float(k[1, 1]),
                         float(k[0, 2]), float(k[1, 2]), camera.base_from_camera)


def _boxes_now(reader: DriveReader, t_ns: int, max_age_ns: int | None) -> np.ndarray:
    b = reader.box_sets.at(int(t_ns), interpolate=True, max_age_ns=max_age_ns)
    if not len(b) or not len(reader.ego):
        return np.zeros((0, 7), np.float32)
    pose, _ = reader.ego.poses_at(np.array([t_ns]))
    return boxes_to_ego_frame(b.xyz_lwh_yaw, *(float(v) for v in pose[0])).astype(np.float32)


def _pad_boxes(rows: list[np.ndarray], valid: list[np.ndarray], k: int) -> tuple[np.ndarray, np.ndarray]:
    m = max((r.shape[1] for r in rows), default=0)
    out = np.zeros((len(rows), k, m, 7), np.float32)
    ok = np.zeros((len(rows), k, m), bool)
    for i, (r, v) in enumerate(zip(rows, valid)):
        out[i, :, :r.shape[1]] = r
        ok[i, :, :r.shape[1]] = v
    return out, ok


def _resize(img: np.ndarray, height_px: int, width_px: int) -> np.ndarray:
    """Area averaging to shrink, bilinear to enlarge (the resize the clip store and the tokenizer data use)."""
    if img.shape[:2] == (height_px, width_px):
        return img
    shrink = height_px <= img.shape[0] and width_px <= img.shape[1]
    return cv2.resize(img, (width_px, height_px), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def _thumb(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    if w <= THUMB_MAX_WIDTH_PX:
        return img.copy()
    return _resize(img, round(h * THUMB_MAX_WIDTH_PX / w), THUMB_MAX_WIDTH_PX)


# ----------------------------------------------------------------------------------------------------
# Forecast scoring against the frames that really came

@dataclass
class _Pending:
    index: int
    t_ns: int
    targets_ns: np.ndarray  # (F,)
    forecast: np.ndarray  # (F, h, w, 3)
    current: np.ndarray  # (h, w, 3) the frame at t, for copy-last-frame
    truth: np.ndarray  # (F, h, w, 3)
    filled: np.ndarray  # (F,) bool
    surprise: float


class _ForecastScorer:
    def __init__(self, model_dt_ns: int, tolerance_ns: int) -> None:
        self.model_dt_ns, self.tol = model_dt_ns, tolerance_ns
        self.pending: list[_Pending] = []
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
        self.pending.append(_Pending(index, rec.t_ns, targets, fc, _resize(rgb, h, w),
                                     np.zeros_like(fc), np.zeros(f, bool), rec.surprise))

    def frame(self, t_ns: int, rgb: np.ndarray | None) -> None:
        keep = []
        for p in self.pending:
            hit = np.flatnonzero(~p.filled & (np.abs(p.targets_ns - t_ns) <= self.tol))
            if len(hit) and rgb is not None:
                small = _resize(rgb, *p.forecast.shape[1:3])
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

    def _finish(self, p: _Pending) -> None:
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


# ----------------------------------------------------------------------------------------------------
# The evaluation loop

def _progress(enabled: bool, text: str) -> None:
    if enabled:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


class _MomentPicker:
    """Keeps camera thumbnails of evenly spread plans and of the worst ones, without holding every frame.

    The worst moments are kept per second of bag time (the worst plan of each second, at most ``CANDIDATES_PER_PICK``
    times as many seconds as moments wanted) and picked at least ``WORST_SEPARATION_S`` apart, so that one bad
    manoeuvre does not fill every slot.
    """

    def __init__(self, frames: int, samples: int, worst: int) -> None:
        lo, hi = 0.08 * frames, 0.85 * frames  # skip the warm-up at the start and the end without a future
        self.targets = sorted({int(round(v)) for v in np.linspace(lo, hi, samples)}) if samples > 0 else []
        self.worst = worst
        self.samples: list[Moment] = []
        self.candidates: dict[str, dict[int, Moment]] = {"surprise": {}, "l2": {}}  # kind -> second -> worst plan

    def offer(self, frame_index: int, index: int, t_ns: int, surprise: float, l2_3s: float,
              draw: Callable[[], np.ndarray]) -> None:
        thumb = None
        if self.targets and frame_index >= self.targets[0] and math.isfinite(l2_3s):
            self.targets.pop(0)
            thumb = _thumb(draw())
            self.samples.append(Moment(index, t_ns, "sample", l2_3s, thumb))
        if self.worst <= 0:
            return
        second = int(t_ns // 1_000_000_000)
        for value, why in ((surprise, "surprise"), (l2_3s, "l2")):
            kept = self.candidates[why]
            if not math.isfinite(value) or (second in kept and kept[second].value >= value):
                continue
            if second not in kept and len(kept) >= CANDIDATES_PER_PICK * self.worst:
                low = min(kept, key=lambda k: kept[k].value)
                if kept[low].value >= value:
                    continue
                del kept[low]
            thumb = thumb if thumb is not None else _thumb(draw())
            kept[second] = Moment(index, t_ns, why, value, thumb)

    def moments(self) -> list[Moment]:
        out = list(self.samples)
        for kept in self.candidates.values():
            picked: list[Moment] = []
            for m in sorted(kept.values(), key=lambda m: -m.value):
                if all(abs(m.t_ns - p.t_ns) >= WORST_SEPARATION_S * 1e9 for p in picked):
                    picked.append(m)
                if len(picked) == self.worst:
                    break
            out += picked
        return out


def _plan_l2_3s(plan: np.ndarray, truth: np.ndarray, valid: np.ndarray, dt_s: float) -> float:
    return M.l2_metrics(plan[None], truth[None], valid[None], dt_s, horizons_s=(3.0,))["l2_3s"]


def evaluate_bag(bag: str | Path, source: OfflinePlanner | RecordedPlans, cfg: PwmConfig, camera: PinholeCamera,
                 *, out_dir: str | Path | None = None, topics: TopicsConfig | None = None,
                 options: EvalOptions | None = None, video_name: str = "overlay.mp4") -> BagEvaluation:
    """Evaluate one bag (module docstring); the overlay video goes to ``out_dir/video_name``."""
    opt = options or EvalOptions()
    started = time.monotonic()
    reader = DriveReader(bag, topics or cfg.data.topics)
    s = reader.summary
    has_odom = bool(s.has_odometry and len(reader.ego) >= 2)
    has_boxes = bool(s.has_objects and len(reader.box_sets))
    k_count, dt_s, model_dt_s = cfg.data.num_waypoints, cfg.data.waypoint_dt_s, cfg.model_dt_s
    dt_ns, model_dt_ns = round(dt_s * 1e9), round(model_dt_s * 1e9)
    camera_period_ns = round(1e9 / cfg.camera.frame_rate_hz)
    max_age = box_max_age_ns(reader, camera_period_ns)
    camera = bag_camera(reader, camera)
    notes: list[str] = []
    if not has_odom:
        notes.append(f"This bag has no odometry on {reader.topics.odometry}: plans cannot be scored (no ground-truth "
                     "future), so this evaluation holds forecast metrics only; the model planned with speed 0.")
    elif not has_boxes:
        notes.append(f"This bag has no ground-truth boxes on {reader.topics.objects}: collision rates are not "
                     "scored.")
    frames = s.camera_frames
    video_stride = max(1, math.ceil(frames / opt.video_max_frames)) if opt.video_max_frames > 0 else 1
    video = None
    if opt.video and out_dir is not None:
        video = OverlayVideo(Path(out_dir) / video_name, cfg.camera.frame_rate_hz, opt.video_codec)
    picker = _MomentPicker(frames, opt.samples, opt.worst)
    scorer = _ForecastScorer(model_dt_ns, camera_period_ns // 2)
    rows: dict[str, list[Any]] = {k: [] for k in ("t", "plan", "truth", "valid", "boxes", "bvalid", "now", "cv",
                                                  "speed", "cmd", "surprise", "latency", "warm")}
    source.start(reader)
    last: tuple[PlanRecord, np.ndarray] | None = None  # latest plan and the ego pose (x, y, yaw) at its stamp
    t0_ns = None
    next_report = 0.1
    try:
        for i, t_ns, rgb in reader.frames():
            t0_ns = t_ns if t0_ns is None else t0_ns
            state = reader.ego.state_at(t_ns) if has_odom else None
            cmd = reader.commands.at(t_ns)
            ego = EgoInput(state.speed_mps, state.accel_mps2, cmd) if state else EgoInput(0.0, 0.0, cmd)
            rec = source.plan(t_ns, rgb, ego)
            scorer.frame(t_ns, rgb)
            truth_now = None
            if rec is not None:
                if rec.waypoints_xyyaw.shape != (k_count, 3):
                    raise DataError(f"a plan at {t_ns} ns has {rec.waypoints_xyyaw.shape[0]} waypoints, but the "
                                    f"model's config says data.num_waypoints = {k_count}")
                wp, ok, bx, bok = ground_truth(reader, t_ns, k_count, dt_ns, max_age) if has_odom else (
                    np.zeros((k_count, 3)), np.zeros(k_count, bool), np.zeros((k_count, 0, 7), np.float32),
                    np.zeros((k_count, 0), bool))
                truth_now = (wp, ok)
                speed = state.speed_mps if state else 0.0
                index = len(rows["t"])
                for key, value in (("t", t_ns), ("plan", rec.waypoints_xyyaw), ("truth", wp), ("valid", ok),
                                   ("boxes", bx), ("bvalid", bok),
                                   ("now", _boxes_now(reader, t_ns, max_age) if has_odom else np.zeros((0, 7))),
                                   ("cv", constant_velocity(np.array([speed]), k_count, dt_s)[0]),
                                   ("speed", speed), ("cmd", cmd), ("surprise", rec.surprise),
                                   ("latency", rec.latency_ms), ("warm", rec.warming_up)):
                    rows[key].append(value)
                if rec.forecast_rgb is not None:
                    scorer.add(index, rec, rgb)
                pose = reader.ego.poses_at(np.array([t_ns]))[0][0] if has_odom else np.zeros(3)
                last = (rec, pose)
                l2 = _plan_l2_3s(rec.waypoints_xyyaw, wp, ok, dt_s) if ok.any() else math.nan
                picker.offer(i, index, t_ns, rec.surprise, l2,
                             functools.partial(draw_overlay, rgb, camera, rec.waypoints_xyyaw[:, :2], wp[ok, :2],
                                               caption_bar=False))
            if video is not None and i % video_stride == 0:
                video.add(_video_frame(reader, rgb, t_ns, t0_ns, last, truth_now, has_odom, camera, cfg, dt_ns,
                                       max_age, cmd, state.speed_mps if state else math.nan))
            if opt.progress and frames and (i + 1) / frames >= next_report:
                _progress(True, f"{opt.progress_prefix}eval-bag {Path(bag).name} ({source.mode}): frame "
                                f"{i + 1}/{frames}, {len(rows['t'])} plans")
                next_report += 0.1
        scorer.close()
        if not rows["t"]:
            if source.mode == "live":
                raise DataError(f"none of the recorded plans in {source.predictions.path} matches a camera frame "
                                f"of {bag} by stamp: were they recorded while replaying this bag?")
            raise DataError(f"no plan was made on {bag}: it has {frames} camera frames")
        info = video.close() if video is not None else None
    except BaseException:
        if video is not None:
            video.discard()
        raise
    boxes, boxes_valid = _pad_boxes(rows["boxes"], rows["bvalid"], k_count)
    f_count = cfg.world_model.forecast_frames
    ft, fpsnr, fssim, cpsnr, cssim = scorer.arrays(f_count)
    extra: dict[str, Any] = {"seconds": round(time.monotonic() - started, 1)}
    latency = np.array(rows["latency"], float)
    if source.mode == "live" and np.isfinite(latency).any() and not (
            0.0 <= np.nanmedian(latency) <= LATENCY_PLAUSIBLE_MS):
        notes.append("The plans were recorded with receive times that are not bag time (record with "
                     "`ros2 bag record --use-sim-time`, or with pwm_replay --record): latency is not scored.")
        latency[:] = math.nan
    if source.mode == "live":
        pred = source.predictions
        extra.update(recorded_plans=len(pred.plans), matched_plans=source.matched, diagnostics=pred.diagnostics)
        if source.matched < len(pred.plans):
            notes.append(f"{len(pred.plans) - source.matched} of the {len(pred.plans)} recorded plans match no "
                         "camera frame of this bag by stamp and are not scored.")
    return BagEvaluation(
        bag=str(bag), mode=source.mode, frames=frames, start_ns=int(t0_ns or s.start_ns), end_ns=s.end_ns,
        has_odometry=has_odom, has_boxes=has_boxes, waypoint_dt_s=dt_s, model_dt_s=model_dt_s,
        plan_t_ns=np.array(rows["t"], np.int64), plans=np.stack(rows["plan"]), truth=np.stack(rows["truth"]),
        truth_valid=np.stack(rows["valid"]), boxes=boxes, boxes_valid=boxes_valid, boxes_now=rows["now"],
        cv=np.stack(rows["cv"]), speed_mps=np.array(rows["speed"], float), command=np.array(rows["cmd"], int),
        surprise=np.array(rows["surprise"], float), latency_ms=latency,
        latency_kind=source.latency_kind, warming_up=np.array(rows["warm"], bool), forecast_t_ns=ft,
        forecast_psnr=fpsnr, forecast_ssim=fssim, copy_psnr=cpsnr, copy_ssim=cssim, strips=scorer.strips,
        moments=picker.moments(), video=info, video_speedup=video_stride, notes=notes, extra=extra)


def _video_frame(reader: DriveReader, rgb: np.ndarray, t_ns: int, t0_ns: int,
                 last: tuple[PlanRecord, np.ndarray] | None, truth_now: tuple[np.ndarray, np.ndarray] | None,
                 has_odom: bool, camera: PinholeCamera, cfg: PwmConfig, dt_ns: int, max_age: int | None, cmd: int,
                 speed_mps: float) -> np.ndarray:
    """The camera frame with the latest plan (moved into the ego frame at this frame) and the true future path."""
    plan_xy = None
    if last is not None:
        rec, pose = last
        plan_xy = rec.waypoints_xyyaw[:, :2]
        if rec.t_ns != t_ns and has_odom:
            here = reader.ego.poses_at(np.array([t_ns]))[0][0]
            world = from_ego_frame(plan_xy, *(float(v) for v in pose))
            plan_xy = to_ego_frame(world, *(float(v) for v in here))
    truth_xy = None
    if has_odom:
        wp, ok = truth_now if truth_now is not None else ground_truth(
            reader, t_ns, cfg.data.num_waypoints, dt_ns, max_age)[:2]
        truth_xy = wp[ok, :2]
    caption = f"{(t_ns - t0_ns) / 1e9:5.1f} s"
    if math.isfinite(speed_mps):
        caption += f"  {speed_mps:4.1f} m/s"
    caption += f"  {COMMANDS[cmd] if 0 <= cmd < len(COMMANDS) else cmd}"
    if last is not None and math.isfinite(last[0].surprise):
        caption += f"  surprise {last[0].surprise:.2f}"
    return draw_overlay(rgb, camera, plan_xy, truth_xy, caption)
