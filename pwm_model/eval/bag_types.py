"""The records of one drive's evaluation (``bag_eval.evaluate_bag``): options, plans, worst moments, forecast
strips and the ``BagEvaluation`` the report and the summary read."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.eval.overlay_video import VideoInfo


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
    camera_intrinsics_px: tuple[float, float, float, float] | None = None  # overlays on bags without CameraInfo


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
    yaw_rate_radps: np.ndarray | None = None  # (N,) from the odometry at each plan (None: not recorded)
    inputs: dict[str, Any] = field(default_factory=dict)  # topics, encoding, resolution, rates (bag_inputs)

    @property
    def name(self) -> str:
        return Path(self.bag).name


