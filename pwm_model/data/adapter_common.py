"""Pieces the dataset adapters (nuScenes, NAVSIM / OpenScene) share: odom frame, ego motion, camera mounting, images.

A dataset's global poses become the REP-103 ``odom`` frame of one drive: the planar pose of the drive's first frame
is the origin (x forward at start, y left, z up), as a robot's odometry starts. Speed, acceleration and yaw rate come
from the dataset where it records them, else from finite differences of the poses. No torch and no ROS types here.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np

from pwm_model.config import CameraConfig, TopicsConfig
from pwm_model.data.schema import Boxes, DriveSample, EgoState
from pwm_model.errors import DataError
from pwm_model.geometry import wrap_angle

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class OdomFrame:
    """The planar pose (in the dataset's global frame) that becomes the origin of a drive's ``odom`` frame."""

    x_m: float
    y_m: float
    yaw_rad: float
    z_m: float = 0.0

    def points(self, xy_m: np.ndarray) -> np.ndarray:
        """Global points (..., 2) -> odom."""
        c, s = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        d = np.asarray(xy_m, np.float64) - np.array([self.x_m, self.y_m])
        return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)

    def yaw(self, yaw_rad: np.ndarray | float) -> np.ndarray:
        """Global yaw -> odom yaw, wrapped to [-pi, pi)."""
        return np.asarray(wrap_angle(np.asarray(yaw_rad, np.float64) - self.yaw_rad))

    def boxes(self, boxes_global: np.ndarray) -> np.ndarray:
        """Global boxes (N, 7) = (x, y, z, l, w, h, yaw) -> odom boxes (N, 7) float32."""
        b = np.array(boxes_global, np.float64).reshape(-1, 7)
        if len(b):
            b[:, :2] = self.points(b[:, :2])
            b[:, 2] -= self.z_m
            b[:, 6] = self.yaw(b[:, 6])
        return b.astype(np.float32)


def finite_difference_motion(t_ns: np.ndarray, xy_m: np.ndarray, yaw_rad: np.ndarray
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Forward speed, forward acceleration and yaw rate from poses by central differences (one-sided at the ends).

    Speed is the velocity projected on the heading (so reversing is negative). One pose gives zeros.
    """
    t_s = (np.asarray(t_ns, np.int64) - int(t_ns[0])) / 1e9
    n = len(t_s)
    if n < 2:
        return np.zeros(n), np.zeros(n), np.zeros(n)
    xy = np.asarray(xy_m, np.float64)
    yaw = np.unwrap(np.asarray(yaw_rad, np.float64))
    vx, vy = np.gradient(xy[:, 0], t_s), np.gradient(xy[:, 1], t_s)
    speed = vx * np.cos(yaw) + vy * np.sin(yaw)
    return speed, np.gradient(speed, t_s), np.gradient(yaw, t_s)


def frame_rate_hz(t_ns: np.ndarray, default_hz: float) -> float:
    """The median frame rate of a stamp series (``default_hz`` for fewer than two stamps)."""
    dt = np.diff(np.asarray(t_ns, np.int64))
    dt = dt[dt > 0]
    return float(1e9 / np.median(dt)) if len(dt) else float(default_hz)


def camera_config(width_px: int, height_px: int, fx_px: float, ego_from_optical_rot: np.ndarray,
                  ego_from_optical_xyz_m: np.ndarray, rate_hz: float) -> CameraConfig:
    """A ``CameraConfig`` from pinhole intrinsics and the optical-frame -> ego extrinsics.

    The horizontal field of view follows from fx and the width; the mounting is the camera origin in the ego frame,
    the pitch is the optical axis' angle below the horizontal (the mounting's yaw and roll, a few tenths of a degree
    on the datasets' front cameras, are not part of ``CameraConfig``).
    """
    if not (np.isfinite(fx_px) and fx_px > 0):
        raise DataError(f"camera focal length fx must be positive and finite, got {fx_px}")
    axis = np.asarray(ego_from_optical_rot, np.float64) @ np.array([0.0, 0.0, 1.0])  # optical z in the ego frame
    pitch_down_deg = math.degrees(math.atan2(-axis[2], math.hypot(axis[0], axis[1])))
    t = np.asarray(ego_from_optical_xyz_m, np.float64).reshape(3)
    return CameraConfig(width_px=int(width_px), height_px=int(height_px),
                        hfov_deg=math.degrees(2.0 * math.atan(width_px / (2.0 * fx_px))),
                        mount_x_m=float(t[0]), mount_y_m=float(t[1]), mount_z_m=float(t[2]),
                        pitch_down_deg=pitch_down_deg, frame_rate_hz=float(rate_hz))


def quat_wxyz_to_matrix(q: Iterable[float]) -> np.ndarray:
    """Rotation matrix of a (w, x, y, z) quaternion as nuScenes / OpenScene store them (normalised here)."""
    w, x, y, z = (float(v) for v in q)
    n = math.sqrt(w * w + x * x + y * y + z * z)
    if not math.isfinite(n) or n < 1e-12:
        raise DataError(f"quaternion {[w, x, y, z]} has zero or non-finite norm")
    w, x, y, z = w / n, x / n, y / n, z / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def yaw_from_wxyz(q: Iterable[float]) -> float:
    """Yaw (rotation about z, ZYX convention) of a (w, x, y, z) quaternion."""
    w, x, y, z = (float(v) for v in q)
    return math.atan2(2.0 * (w * z + x * y), 1.0 - 2.0 * (y * y + z * z))


def output_size(width_px: int, height_px: int, target_width_px: int | None) -> tuple[int, int]:
    """(width, height) after an optional resize to ``target_width_px`` (aspect kept; never upscales)."""
    if not target_width_px or target_width_px >= width_px:
        return int(width_px), int(height_px)
    return int(target_width_px), max(1, int(round(height_px * target_width_px / width_px)))


def read_rgb(path: Path, size_px: tuple[int, int] | None = None) -> np.ndarray:
    """Read an image file with OpenCV as (H, W, 3) uint8 RGB, resized to ``size_px`` = (w, h) when given."""
    if not path.is_file():
        raise DataError(f"image {path} is missing")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None or bgr.size == 0:
        raise DataError(f"image {path} is corrupt and could not be decoded")
    if size_px is not None and (bgr.shape[1], bgr.shape[0]) != tuple(size_px):
        bgr = cv2.resize(bgr, tuple(size_px), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def image_size(path: Path) -> tuple[int, int]:
    """(width, height) of an image file."""
    return tuple(read_rgb(path).shape[1::-1])  # type: ignore[return-value]


def check_files(paths: Iterable[Path], what: str) -> None:
    """Raise ``DataError`` for the first missing file (checked before anything is written)."""
    for p in paths:
        if not p.is_file():
            raise DataError(f"{what} image {p} is missing")


@dataclass
class DriveFrames:
    """One drive read from a dataset, before images are loaded: stamps, odom poses, motion, commands and boxes."""

    drive_id: str
    camera: CameraConfig
    t_ns: np.ndarray  # (N,) int64, strictly increasing
    image_paths: list[Path]
    xy_m: np.ndarray  # (N, 2) odom
    z_m: np.ndarray  # (N,)
    yaw_rad: np.ndarray  # (N,) odom
    speed_mps: np.ndarray  # (N,)
    accel_mps2: np.ndarray  # (N,)
    yaw_rate_radps: np.ndarray  # (N,)
    commands: np.ndarray  # (N,) int: 0 left, 1 straight, 2 right
    boxes: list[Boxes]  # per frame, odom frame
    source_size_px: tuple[int, int] = (0, 0)  # (w, h) of the dataset's images; camera.width_px may be smaller

    def __len__(self) -> int:
        return len(self.t_ns)

    def samples(self) -> Iterable[DriveSample]:
        """The frames as ``DriveSample`` (images read lazily, resized to the camera's size)."""
        size = (self.camera.width_px, self.camera.height_px)
        for i in range(len(self.t_ns)):
            ego = EgoState(t_ns=int(self.t_ns[i]), x_m=float(self.xy_m[i, 0]), y_m=float(self.xy_m[i, 1]),
                           yaw_rad=float(self.yaw_rad[i]), speed_mps=float(self.speed_mps[i]),
                           accel_mps2=float(self.accel_mps2[i]), yaw_rate_radps=float(self.yaw_rate_radps[i]),
                           z_m=float(self.z_m[i]))
            yield DriveSample(t_ns=int(self.t_ns[i]), image_rgb=read_rgb(self.image_paths[i], size), ego=ego,
                              command=int(self.commands[i]), boxes=self.boxes[i], frame_index=i)

    def check(self) -> None:
        """Raise ``DataError`` for non-increasing stamps, non-finite poses or missing images."""
        if len(self.t_ns) == 0:
            raise DataError(f"drive {self.drive_id} has no camera frames")
        if np.any(np.diff(self.t_ns) <= 0):
            raise DataError(f"drive {self.drive_id} has camera stamps that do not increase")
        for name in ("xy_m", "z_m", "yaw_rad", "speed_mps", "accel_mps2", "yaw_rate_radps"):
            if not np.all(np.isfinite(getattr(self, name))):
                raise DataError(f"drive {self.drive_id} has non-finite values in {name}")
        check_files(self.image_paths, f"drive {self.drive_id}")


def resized_camera(camera: CameraConfig, target_width_px: int | None) -> CameraConfig:
    """The camera after an optional downscale to ``target_width_px`` (same field of view)."""
    w, h = output_size(camera.width_px, camera.height_px, target_width_px)
    return replace(camera, width_px=w, height_px=h)


def write_drives(drives: Iterable[DriveFrames], out_dir: str | os.PathLike[str], *, topics: TopicsConfig,
                 compressed: bool, storage: str,
                 progress: Callable[[int, DriveFrames, Path], None] | None = None) -> list[Path]:
    """Write each drive as a rosbag2 directory ``out_dir/<drive_id>``.

    ``write_drive`` writes each bag to a temporary sibling and renames it at the end, so a failure (a missing or
    corrupt image half-way) leaves no partial bag; an existing bag of the same name is replaced.
    """
    from pwm_model.data.bag_writer import write_drive

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for i, drive in enumerate(drives):
        drive.check()
        final = write_drive(out / drive.drive_id, drive.samples(), drive.camera, topics, compressed=compressed,
                            storage=storage)
        written.append(final)
        if progress is not None:
            progress(i, drive, final)
    return written
