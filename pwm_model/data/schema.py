"""Plain numpy data structures shared by the data sources, the clip store, training and evaluation.

Frames: REP-103. The world frame is ``odom`` (x east/forward at start, y left, z up); the ego frame at time t is
``base_link`` at t (x forward, y left, z up). Angles in radians, distances in metres, stamps in integer nanoseconds.
No torch and no ROS types here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

COMMAND_LEFT, COMMAND_STRAIGHT, COMMAND_RIGHT = 0, 1, 2  # std_msgs/UInt8 on /route/command

BOX_FIELDS = ("x_m", "y_m", "z_m", "length_m", "width_m", "height_m", "yaw_rad")  # columns of a box array


@dataclass
class EgoState:
    """Ego pose and motion in the world frame at ``t_ns`` (from nav_msgs/Odometry)."""

    t_ns: int
    x_m: float
    y_m: float
    yaw_rad: float
    speed_mps: float = 0.0  # forward speed (twist.linear.x in base_link)
    accel_mps2: float = 0.0  # forward acceleration (finite difference of speed when not measured)
    yaw_rate_radps: float = 0.0
    z_m: float = 0.0


@dataclass
class Boxes:
    """N 3D boxes (ground truth objects), one row per box: ``BOX_FIELDS``; z_m is the box centre height."""

    xyz_lwh_yaw: np.ndarray = field(default_factory=lambda: np.zeros((0, 7), np.float32))  # (N, 7) float32
    track_ids: np.ndarray = field(default_factory=lambda: np.zeros((0,), np.int32))  # (N,) int32
    labels: tuple[str, ...] = ()  # (N,) class names, e.g. "car", "parked_car", "pole"

    def __len__(self) -> int:
        return int(self.xyz_lwh_yaw.shape[0])


@dataclass
class DriveSample:
    """One camera frame of a drive with the time-aligned ego state, route command and boxes."""

    t_ns: int
    image_rgb: np.ndarray  # (H, W, 3) uint8, RGB
    ego: EgoState  # interpolated at t_ns
    command: int  # 0 left, 1 straight, 2 right (latest command at or before t_ns)
    boxes: Boxes  # in the world frame, latest set at or before t_ns
    frame_index: int = 0
    scenario: str = ""  # scenario family active at t_ns (synthetic drives), else ""


@dataclass
class Clip:
    """A training / evaluation clip centred on the current model frame t.

    ``frames_rgb`` holds, at the tokenizer's ctx resolution and ``model_dt_s`` apart:
    index 0: the guide frame (the model frame before the oldest history frame: the dyn tokens of every frame are
    guided by the ctx features of the model frame before it), indices 1..H: the H history frames (oldest first; index
    H is the current frame t), indices H+1..H+F: the F true future frames. Waypoints and boxes are in the ego frame
    at t. ``DataConfig.clip_frames`` = 1 + H + F.
    """

    drive_id: str
    t_ns: int  # stamp of the current frame
    frames_rgb: np.ndarray  # (1 + H + F, h, w, 3) uint8
    frame_t_ns: np.ndarray  # (1 + H + F,) int64
    speed_mps: float  # ego state at t
    accel_mps2: float
    yaw_rate_radps: float
    command: int
    history_xyyaw: np.ndarray  # (H, 3) float32: ego poses at the history frames (last row 0, 0, 0), ego frame at t
    waypoints_xyyaw: np.ndarray  # (K, 3) float32: future ego poses at k * waypoint_dt_s, in the ego frame at t
    waypoints_valid: np.ndarray  # (K,) bool: False where the drive ended before that waypoint
    boxes: np.ndarray  # (K, N, 7) float32: boxes at each waypoint time, in the ego frame at t (BOX_FIELDS)
    boxes_valid: np.ndarray  # (K, N) bool
    scenario: str = ""  # scenario family label (synthetic world) or source name
