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
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.config import COMMANDS, PwmConfig, TopicsConfig
from pwm_model.data.bag import DriveReader
from pwm_model.errors import DataError
from pwm_model.eval import metrics as M
from pwm_model.eval.bag_inputs import describe_inputs
from pwm_model.eval.bag_truth import (
    ForecastScorer,
    box_max_age_ns,
    boxes_now,
    ground_truth,
    pad_boxes,
    thumbnail,
)
from pwm_model.eval.bag_types import BagEvaluation, EvalOptions, Moment, PlanRecord
from pwm_model.eval.baselines import constant_velocity
from pwm_model.eval.overlay_camera import describe, overlay_camera
from pwm_model.eval.overlay_video import OverlayVideo, draw_overlay
from pwm_model.eval.predictions import RecordedPredictions
from pwm_model.geometry import (
    PinholeCamera,
    from_ego_frame,
    to_ego_frame,
)
from pwm_model.runtime.types import EgoInput

log = logging.getLogger(__name__)

LATENCY_PLAUSIBLE_MS = 60_000.0  # recorded arrival minus camera stamp beyond this: not bag time (wall clock)
WORST_SEPARATION_S = 2.0  # the worst moments shown are at least this far apart
CANDIDATES_PER_PICK = 8  # seconds of bag time kept as candidates per worst moment wanted
RATE_TOLERANCE = 0.1  # a frame is due for planning this share of a planning period early (camera jitter)


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
# The evaluation loop

def _progress(enabled: bool, text: str) -> None:
    if enabled:
        sys.stderr.write(text + "\n")
        sys.stderr.flush()


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    return f"{s} s" if s < 60 else f"{s // 60}m{s % 60:02d}s" if s < 3600 else f"{s // 3600}h{s % 3600 // 60:02d}m"


def progress_line(prefix: str, bag: str, mode: str, done: int, total: int, plans: int, elapsed_s: float) -> str:
    """``eval-bag NAME (mode): frame done/total, N plans, elapsed, ETA`` (the ETA from the frames' rate so far)."""
    text = f"{prefix}eval-bag {bag} ({mode}): frame {done}/{total}, {plans} plans, {_duration(elapsed_s)}"
    if 0 < done < total:
        text += f", ETA {_duration(elapsed_s * (total - done) / done)}"
    return text


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
            thumb = thumbnail(draw())
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
            thumb = thumb if thumb is not None else thumbnail(draw())
            kept[second] = Moment(index, t_ns, why, value, thumb)

    def moments(self) -> list[Moment]:
        out = list(self.samples)
        for kept in self.candidates.values():
            picked: list[Moment] = []
            for m in sorted(kept.values(), key=lambda m: (-m.value, m.t_ns)):  # ties: the earlier first
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
    camera, camera_source = overlay_camera(reader, camera, opt.camera_intrinsics_px)
    notes: list[str] = [reader.cut_off_note] if reader.cut_off_note else []
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
    scorer = ForecastScorer(model_dt_ns, camera_period_ns // 2)
    rows: dict[str, list[Any]] = {k: [] for k in ("t", "plan", "truth", "valid", "boxes", "bvalid", "now", "cv",
                                                  "speed", "yaw_rate", "cmd", "surprise", "latency", "warm")}
    header_ns: list[int] = []  # every camera frame's header stamp and receive time (the inputs' rates)
    receive_ns: list[int] = []
    source.start(reader)
    last: tuple[PlanRecord, np.ndarray] | None = None  # latest plan and the ego pose (x, y, yaw) at its stamp
    t0_ns = None
    next_report = 0.1
    loop_started = time.monotonic()
    try:
        for i, t_ns, rgb in reader.frames():
            t0_ns = t_ns if t0_ns is None else t0_ns
            header_ns.append(int(t_ns))
            receive_ns.append(reader.last_receive_ns if reader.last_receive_ns is not None else int(t_ns))
            state = reader.ego.state_at(t_ns) if has_odom else None
            cmd, cmd_age_s = reader.commands.at(t_ns), reader.commands.age_s(t_ns)
            ego = EgoInput(state.speed_mps, state.accel_mps2, cmd, state.yaw_rate_radps, cmd_age_s) if state else \
                EgoInput(0.0, 0.0, cmd, command_age_s=cmd_age_s)
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
                                   ("now", boxes_now(reader, t_ns, max_age) if has_odom else np.zeros((0, 7))),
                                   ("cv", constant_velocity(np.array([speed]), k_count, dt_s)[0]),
                                   ("speed", speed), ("yaw_rate", state.yaw_rate_radps if state else math.nan),
                                   ("cmd", cmd), ("surprise", rec.surprise),
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
                _progress(True, progress_line(opt.progress_prefix, Path(bag).name, source.mode, i + 1, frames,
                                              len(rows["t"]), time.monotonic() - loop_started))
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
    boxes, boxes_valid = pad_boxes(rows["boxes"], rows["bvalid"], k_count)
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
        if pred.diagnostics_run:
            extra["node_diagnostics"] = pred.diagnostics_run
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
        moments=picker.moments(), video=info, video_speedup=video_stride, notes=notes, extra=extra,
        yaw_rate_radps=np.array(rows["yaw_rate"], float), inputs={
            **describe_inputs(reader, header_ns, receive_ns, cfg),
            "overlay_camera": describe(camera, camera_source, s.image_width_px, s.image_height_px)})


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
