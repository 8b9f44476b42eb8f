"""What a ``DriveReader`` reads out of a bag: its summary, the ego track, commands, boxes and scenario labels."""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pwm_model.data.contract import MAX_COMMAND_AGE_S
from pwm_model.data.schema import COMMAND_STRAIGHT, Boxes, EgoState
from pwm_model.geometry import (
    interpolate_poses,
    interpolate_scalar,
    wrap_angle,
)


@dataclass
class TopicSummary:
    msgtype: str
    count: int


@dataclass
class BagSummary:
    """What a bag holds, as far as pwm is concerned."""

    path: Path
    storage: str  # mcap | sqlite3
    start_ns: int
    end_ns: int
    message_count: int
    topics: dict[str, TopicSummary]
    camera_topic: str | None  # the camera topic used (raw preferred when both are present)
    camera_compressed: bool
    camera_frames: int
    image_encoding: str = ""  # raw encoding, or the CompressedImage format
    image_width_px: int = 0
    image_height_px: int = 0
    has_camera_info: bool = False
    has_odometry: bool = False
    has_command: bool = False
    has_objects: bool = False
    has_scenario: bool = False
    canonical: dict[str, bool] = field(default_factory=dict)  # TopicsConfig field -> present

    @property
    def duration_s(self) -> float:
        return max(0, self.end_ns - self.start_ns) / 1e9

    def describe(self) -> str:
        """A few human-readable lines."""
        cam = "none"
        if self.camera_topic:
            cam = (f"{self.camera_topic} ({'compressed' if self.camera_compressed else 'raw'} {self.image_encoding}, "
                   f"{self.image_width_px}x{self.image_height_px} px, {self.camera_frames} frames)")
        present = [k for k, v in self.canonical.items() if v]
        missing = [k for k, v in self.canonical.items() if not v]
        lines = [f"{self.path} ({self.storage}): {self.message_count} messages over {self.duration_s:.1f} s",
                 f"  camera: {cam}",
                 f"  canonical topics present: {', '.join(present) or 'none'}; missing: {', '.join(missing) or 'none'}"]
        lines += [f"  {name}: {t.msgtype} x{t.count}" for name, t in sorted(self.topics.items())]
        return "\n".join(lines)


@dataclass
class EgoTrack:
    """The ego track from nav_msgs/Odometry, sorted by stamp (world frame = the odometry's frame)."""

    t_ns: np.ndarray  # (N,) int64
    x_m: np.ndarray  # (N,) float64
    y_m: np.ndarray
    z_m: np.ndarray
    yaw_rad: np.ndarray
    speed_mps: np.ndarray  # twist.linear.x, or the finite difference of positions when the twist is never set
    accel_mps2: np.ndarray  # finite difference of speed (Odometry carries no acceleration)
    yaw_rate_radps: np.ndarray

    def __len__(self) -> int:
        return int(self.t_ns.shape[0])

    @property
    def xyyaw(self) -> np.ndarray:
        return np.stack([self.x_m, self.y_m, self.yaw_rad], axis=1)

    def poses_at(self, t_ns: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(x, y, yaw) poses (M, 3) interpolated at stamps, and validity (inside the track's time span)."""
        t = np.atleast_1d(np.asarray(t_ns, np.int64))
        if len(self) == 0:
            return np.zeros((len(t), 3)), np.zeros(len(t), bool)
        return interpolate_poses(t, self.t_ns, self.xyyaw)

    def state_at(self, t_ns: int) -> EgoState:
        """The ego state interpolated at one stamp (zeros when the bag has no odometry)."""
        if len(self) == 0:
            return EgoState(t_ns=int(t_ns), x_m=0.0, y_m=0.0, yaw_rad=0.0)
        pose, _ = self.poses_at(np.array([t_ns]))
        s = lambda v: float(interpolate_scalar(np.array([t_ns]), self.t_ns, v)[0])  # noqa: E731
        return EgoState(t_ns=int(t_ns), x_m=float(pose[0, 0]), y_m=float(pose[0, 1]), yaw_rad=float(pose[0, 2]),
                        speed_mps=s(self.speed_mps), accel_mps2=s(self.accel_mps2),
                        yaw_rate_radps=s(self.yaw_rate_radps), z_m=s(self.z_m))


@dataclass
class Commands:
    t_ns: np.ndarray  # (N,) int64
    value: np.ndarray  # (N,) int64: 0 left, 1 straight, 2 right

    def at(self, t_ns: int, default: int = COMMAND_STRAIGHT) -> int:
        """The latest command at or before ``t_ns`` (``default`` before the first one)."""
        i = int(np.searchsorted(self.t_ns, int(t_ns), side="right")) - 1
        return int(self.value[i]) if i >= 0 else int(default)

    def age_s(self, t_ns: int) -> float:
        """Seconds the command at ``t_ns`` has had its value: since the first message of the latest run of equal
        values, capped at ``MAX_COMMAND_AGE_S``; the cap too before any change (how long the first value stood
        before the bag began is unknown)."""
        i = int(np.searchsorted(self.t_ns, int(t_ns), side="right")) - 1
        start = int(self._run_start[i]) if i >= 0 else 0
        if start == 0:  # before any message, or still the first value
            return MAX_COMMAND_AGE_S
        return float(min(max(int(t_ns) - int(self.t_ns[start]), 0) / 1e9, MAX_COMMAND_AGE_S))

    @functools.cached_property
    def _run_start(self) -> np.ndarray:
        """(N,) index of the message that began each message's run of equal values (0: the first run), computed once
        so that ``age_s`` per camera frame is a binary search."""
        v = np.asarray(self.value)
        changed = np.r_[False, v[1:] != v[:-1]] if len(v) else np.zeros(0, bool)
        return np.maximum.accumulate(np.where(changed, np.arange(len(v)), 0)) if len(v) else np.zeros(0, np.int64)


@dataclass
class BoxSets:
    t_ns: np.ndarray  # (N,) int64, sorted
    sets: list[Boxes]  # in the world frame

    def __len__(self) -> int:
        return len(self.sets)

    @property
    def max_boxes(self) -> int:
        return max((len(b) for b in self.sets), default=0)

    def median_period_ns(self) -> int:
        return int(np.median(np.diff(self.t_ns))) if len(self.t_ns) >= 2 else 0

    def at(self, t_ns: int, *, interpolate: bool = False, max_age_ns: int | None = None) -> Boxes:
        """The latest box set at or before ``t_ns``; empty before the first set or when older than ``max_age_ns``.

        With ``interpolate``, boxes whose track id is also in the next set move linearly (yaw along the shorter
        arc) to ``t_ns``.
        """
        i = int(np.searchsorted(self.t_ns, int(t_ns), side="right")) - 1
        if i < 0 or (max_age_ns is not None and int(t_ns) - int(self.t_ns[i]) > max_age_ns):
            return Boxes()
        a = self.sets[i]
        if not interpolate or i + 1 >= len(self.sets) or int(self.t_ns[i]) == int(t_ns) or len(a) == 0:
            return a
        b = self.sets[i + 1]
        w = (int(t_ns) - int(self.t_ns[i])) / float(int(self.t_ns[i + 1]) - int(self.t_ns[i]))
        where = {int(tid): k for k, tid in enumerate(b.track_ids)}
        out = np.array(a.xyz_lwh_yaw, np.float64, copy=True)
        for j, tid in enumerate(a.track_ids):
            k = where.get(int(tid))
            if k is None:
                continue
            nb = np.asarray(b.xyz_lwh_yaw[k], np.float64)
            out[j, :6] += w * (nb[:6] - out[j, :6])
            out[j, 6] = wrap_angle(out[j, 6] + w * wrap_angle(nb[6] - out[j, 6]))
        return Boxes(out.astype(np.float32), a.track_ids, a.labels)


@dataclass
class Labels:
    t_ns: np.ndarray  # (N,) int64
    labels: list[str]

    def at(self, t_ns: int, default: str = "") -> str:
        i = int(np.searchsorted(self.t_ns, int(t_ns), side="right")) - 1
        return self.labels[i] if i >= 0 else default


