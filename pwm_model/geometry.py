"""Poses, ego-frame transforms, pose interpolation and the pinhole camera (REP-103: x forward, y left, z up).

Everything is numpy and vectorised over leading dimensions. Angles in radians, distances in metres.
The camera's optical frame follows REP-103 too: z forward, x right, y down.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pwm_model.config import CameraConfig

# the ego box of the planning metrics (the nuScenes ego box used by the ST-P3 / UniAD / VAD collision metric): the
# evaluation scores plans with it, training's overlap penalty (train/collision_loss.py) uses the same
METRIC_EGO_LENGTH_M = 4.084
METRIC_EGO_WIDTH_M = 1.85
METRIC_EGO_CENTER_X_M = 1.4  # box centre ahead of base_link (the rear axle in the synthetic world and in nuScenes)


def wrap_angle(angle_rad: np.ndarray | float) -> np.ndarray | float:
    """Wrap angles to [-pi, pi)."""
    return (np.asarray(angle_rad) + np.pi) % (2.0 * np.pi) - np.pi if isinstance(angle_rad, np.ndarray) else (
        (angle_rad + math.pi) % (2.0 * math.pi) - math.pi)


# ----------------------------------------------------------------------------------------------------
# SE(2)

def se2_matrix(x_m: np.ndarray | float, y_m: np.ndarray | float, yaw_rad: np.ndarray | float) -> np.ndarray:
    """Homogeneous 3x3 matrices for (x, y, yaw); broadcasts over leading dims -> (..., 3, 3)."""
    x, y, yaw = np.broadcast_arrays(np.asarray(x_m, float), np.asarray(y_m, float), np.asarray(yaw_rad, float))
    c, s = np.cos(yaw), np.sin(yaw)
    m = np.zeros(x.shape + (3, 3))
    m[..., 0, 0], m[..., 0, 1], m[..., 0, 2] = c, -s, x
    m[..., 1, 0], m[..., 1, 1], m[..., 1, 2] = s, c, y
    m[..., 2, 2] = 1.0
    return m


def to_ego_frame(xy_world_m: np.ndarray, ego_x_m: float, ego_y_m: float, ego_yaw_rad: float) -> np.ndarray:
    """World points (..., 2) -> the ego frame of a vehicle at (x, y, yaw) in the world."""
    c, s = math.cos(ego_yaw_rad), math.sin(ego_yaw_rad)
    d = np.asarray(xy_world_m, float) - np.array([ego_x_m, ego_y_m])
    return np.stack([c * d[..., 0] + s * d[..., 1], -s * d[..., 0] + c * d[..., 1]], axis=-1)


def from_ego_frame(xy_ego_m: np.ndarray, ego_x_m: float, ego_y_m: float, ego_yaw_rad: float) -> np.ndarray:
    """Ego-frame points (..., 2) -> the world frame."""
    c, s = math.cos(ego_yaw_rad), math.sin(ego_yaw_rad)
    p = np.asarray(xy_ego_m, float)
    return np.stack([c * p[..., 0] - s * p[..., 1] + ego_x_m, s * p[..., 0] + c * p[..., 1] + ego_y_m], axis=-1)


def poses_to_ego_frame(xyyaw_world: np.ndarray, ego_x_m: float, ego_y_m: float, ego_yaw_rad: float) -> np.ndarray:
    """World poses (..., 3) as (x, y, yaw) -> poses in the ego frame at (x, y, yaw); yaw wrapped to [-pi, pi)."""
    p = np.asarray(xyyaw_world, float)
    xy = to_ego_frame(p[..., :2], ego_x_m, ego_y_m, ego_yaw_rad)
    yaw = wrap_angle(p[..., 2] - ego_yaw_rad)
    return np.concatenate([xy, np.asarray(yaw)[..., None]], axis=-1)


def boxes_to_ego_frame(boxes_world: np.ndarray, ego_x_m: float, ego_y_m: float, ego_yaw_rad: float,
                       ego_z_m: float = 0.0) -> np.ndarray:
    """Boxes (..., 7) = (x, y, z, l, w, h, yaw) in the world -> the ego frame (planar ego motion)."""
    b = np.array(boxes_world, dtype=np.float64, copy=True)
    if b.size:
        b[..., :2] = to_ego_frame(b[..., :2], ego_x_m, ego_y_m, ego_yaw_rad)
        b[..., 2] -= ego_z_m
        b[..., 6] = wrap_angle(b[..., 6] - ego_yaw_rad)
    return b


# ----------------------------------------------------------------------------------------------------
# SE(3)

def quat_to_matrix(qx: float, qy: float, qz: float, qw: float) -> np.ndarray:
    """Rotation matrix of a unit quaternion (normalised here)."""
    q = np.array([qw, qx, qy, qz], float)
    n = np.linalg.norm(q)
    if not np.isfinite(n) or n < 1e-12:
        raise ValueError("quaternion has zero or non-finite norm")
    w, x, y, z = q / n
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def yaw_from_quat(qx: float, qy: float, qz: float, qw: float) -> float:
    """Yaw (rotation about z) of a quaternion, ZYX convention."""
    return math.atan2(2.0 * (qw * qz + qx * qy), 1.0 - 2.0 * (qy * qy + qz * qz))


def quat_from_yaw(yaw_rad: float) -> tuple[float, float, float, float]:
    """(x, y, z, w) of a pure yaw rotation."""
    return 0.0, 0.0, math.sin(yaw_rad / 2.0), math.cos(yaw_rad / 2.0)


@dataclass(frozen=True)
class Pose3:
    """A rigid transform: ``p_parent = rotation @ p_child + translation``."""

    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)

    @staticmethod
    def identity() -> Pose3:
        return Pose3(np.eye(3), np.zeros(3))

    @staticmethod
    def from_xyz_rpy(x: float, y: float, z: float, roll: float, pitch: float, yaw: float) -> Pose3:
        cr, sr, cp, sp, cy, sy = (math.cos(roll), math.sin(roll), math.cos(pitch), math.sin(pitch),
                                  math.cos(yaw), math.sin(yaw))
        rz = np.array([[cy, -sy, 0], [sy, cy, 0], [0, 0, 1]])
        ry = np.array([[cp, 0, sp], [0, 1, 0], [-sp, 0, cp]])
        rx = np.array([[1, 0, 0], [0, cr, -sr], [0, sr, cr]])
        return Pose3(rz @ ry @ rx, np.array([x, y, z], float))

    def matrix(self) -> np.ndarray:
        m = np.eye(4)
        m[:3, :3], m[:3, 3] = self.rotation, self.translation
        return m

    def inverse(self) -> Pose3:
        rt = self.rotation.T
        return Pose3(rt, -rt @ self.translation)

    def compose(self, other: Pose3) -> Pose3:
        """self * other (apply ``other`` first)."""
        return Pose3(self.rotation @ other.rotation, self.rotation @ other.translation + self.translation)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Transform points (..., 3)."""
        return np.asarray(points, float) @ self.rotation.T + self.translation


# ----------------------------------------------------------------------------------------------------
# Interpolation at arbitrary stamps

def interpolate_poses(t_ns: np.ndarray, pose_t_ns: np.ndarray, xyyaw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear interpolation of (x, y, yaw) poses at query stamps; yaw along the shorter arc.

    Returns ``(poses (N, 3), valid (N,))``; queries outside [first, last] stamp are clamped and marked invalid.
    """
    t_q = np.atleast_1d(np.asarray(t_ns, np.int64))
    ts = np.asarray(pose_t_ns, np.int64)
    p = np.asarray(xyyaw, float)
    if ts.ndim != 1 or len(ts) == 0 or p.shape != (len(ts), 3):
        raise ValueError("interpolate_poses needs N stamps and an (N, 3) pose array, N >= 1")
    if np.any(np.diff(ts) <= 0):
        raise ValueError("pose stamps must be strictly increasing")
    valid = (t_q >= ts[0]) & (t_q <= ts[-1])
    if len(ts) == 1:
        return np.repeat(p, len(t_q), axis=0), valid
    idx = np.clip(np.searchsorted(ts, t_q, side="right") - 1, 0, len(ts) - 2)
    t0, t1 = ts[idx], ts[idx + 1]
    a = np.clip((t_q - t0) / (t1 - t0).astype(float), 0.0, 1.0)
    p0, p1 = p[idx], p[idx + 1]
    xy = p0[:, :2] + a[:, None] * (p1[:, :2] - p0[:, :2])
    dyaw = wrap_angle(p1[:, 2] - p0[:, 2])
    yaw = wrap_angle(p0[:, 2] + a * dyaw)
    return np.concatenate([xy, np.asarray(yaw)[:, None]], axis=1), valid


def interpolate_scalar(t_ns: np.ndarray, sample_t_ns: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Linear interpolation of a scalar series at query stamps (clamped at both ends)."""
    return np.interp(np.asarray(t_ns, np.float64), np.asarray(sample_t_ns, np.float64), np.asarray(values, float))


# ----------------------------------------------------------------------------------------------------
# Pinhole camera

# base_link (x fwd, y left, z up) -> optical (x right, y down, z fwd), before the mounting pitch
_OPTICAL_FROM_BODY = np.array([[0.0, -1.0, 0.0], [0.0, 0.0, -1.0], [1.0, 0.0, 0.0]])


@dataclass(frozen=True)
class PinholeCamera:
    """A pinhole camera with intrinsics (pixels) and its mounting in ``base_link``."""

    width_px: int
    height_px: int
    fx: float
    fy: float
    cx: float
    cy: float
    base_from_camera: Pose3  # camera optical frame -> base_link

    @staticmethod
    def from_config(cfg: CameraConfig, width_px: int | None = None, height_px: int | None = None) -> PinholeCamera:
        """The configured camera, optionally at another resolution with the same field of view."""
        w = int(width_px or cfg.width_px)
        h = int(height_px or cfg.height_px)
        fx = (w / 2.0) / math.tan(math.radians(cfg.hfov_deg) / 2.0)
        pitch = math.radians(cfg.pitch_down_deg)
        # rotation body->optical, with the pitch applied about the body y axis (positive pitch looks down)
        body_pitch = Pose3.from_xyz_rpy(0, 0, 0, 0, pitch, 0).rotation
        base_from_optical_rot = body_pitch @ _OPTICAL_FROM_BODY.T
        pose = Pose3(base_from_optical_rot, np.array([cfg.mount_x_m, cfg.mount_y_m, cfg.mount_z_m]))
        return PinholeCamera(w, h, fx, fx, (w - 1) / 2.0, (h - 1) / 2.0, pose)

    @property
    def K(self) -> np.ndarray:  # noqa: N802 - the conventional name
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def scaled(self, width_px: int, height_px: int) -> PinholeCamera:
        """The same camera resampled to another resolution (intrinsics scaled)."""
        sx, sy = width_px / self.width_px, height_px / self.height_px
        return PinholeCamera(width_px, height_px, self.fx * sx, self.fy * sy, (self.cx + 0.5) * sx - 0.5,
                             (self.cy + 0.5) * sy - 0.5, self.base_from_camera)

    def base_to_camera(self, points_base: np.ndarray) -> np.ndarray:
        """Points (..., 3) in base_link -> the optical frame."""
        return self.base_from_camera.inverse().apply(points_base)

    def project(self, points_base: np.ndarray, near_m: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
        """Project base_link points (..., 3) to pixels (..., 2) (u right, v down).

        Returns ``(uv, in_front)``; ``in_front`` is False for points closer than ``near_m`` along the optical axis
        (their uv is NaN).
        """
        pc = self.base_to_camera(points_base)
        z = pc[..., 2]
        in_front = z > near_m
        with np.errstate(divide="ignore", invalid="ignore"):
            u = self.fx * pc[..., 0] / z + self.cx
            v = self.fy * pc[..., 1] / z + self.cy
        uv = np.stack([u, v], axis=-1)
        uv[~in_front] = np.nan
        return uv, in_front

    def in_image(self, uv: np.ndarray) -> np.ndarray:
        return (uv[..., 0] >= 0) & (uv[..., 0] <= self.width_px - 1) & (uv[..., 1] >= 0) & (
            uv[..., 1] <= self.height_px - 1)

    def pixel_ray_to_ground(self, uv: np.ndarray, ground_z_m: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
        """Intersect pixel rays with the plane z = ground_z_m in base_link; returns (points (..., 3), hit)."""
        uv = np.asarray(uv, float)
        d_opt = np.stack([(uv[..., 0] - self.cx) / self.fx, (uv[..., 1] - self.cy) / self.fy,
                          np.ones(uv.shape[:-1])], axis=-1)
        d = d_opt @ self.base_from_camera.rotation.T
        o = self.base_from_camera.translation
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (ground_z_m - o[2]) / d[..., 2]
        hit = np.isfinite(s) & (s > 0)
        pts = o + s[..., None] * d
        pts[~hit] = np.nan
        return pts, hit

    def horizon_v(self) -> float:
        """Image row of the horizon (the vanishing line of the ground plane)."""
        far = np.array([1e6, 0.0, self.base_from_camera.translation[2]])
        uv, _ = self.project(far)
        return float(uv[1])


def box_corners(boxes: np.ndarray) -> np.ndarray:
    """Corners (..., 8, 3) of boxes (..., 7) = (x, y, z_centre, l, w, h, yaw); bottom face first."""
    b = np.asarray(boxes, float)
    lx, ly, lz = b[..., 3:4] / 2, b[..., 4:5] / 2, b[..., 5:6] / 2
    sx = np.array([1, 1, -1, -1, 1, 1, -1, -1], float)
    sy = np.array([1, -1, -1, 1, 1, -1, -1, 1], float)
    sz = np.array([-1, -1, -1, -1, 1, 1, 1, 1], float)
    x, y, z = sx * lx, sy * ly, sz * lz
    c, s = np.cos(b[..., 6:7]), np.sin(b[..., 6:7])
    return np.stack([c * x - s * y + b[..., 0:1], s * x + c * y + b[..., 1:2], z + b[..., 2:3]], axis=-1)


def box_footprint(boxes: np.ndarray) -> np.ndarray:
    """BEV footprint corners (..., 4, 2) of boxes (..., 7), counter-clockwise."""
    return box_corners(boxes)[..., :4, :2][..., ::-1, :]


def project_boxes(camera: PinholeCamera, boxes_base: np.ndarray, near_m: float = 0.1) -> tuple[np.ndarray, np.ndarray]:
    """Project the corners of base_link boxes (N, 7) -> (uv (N, 8, 2), corner in front (N, 8))."""
    return camera.project(box_corners(boxes_base), near_m=near_m)


def clip_polygon_near(points_cam: np.ndarray, near_m: float) -> np.ndarray:
    """Clip a planar polygon given in the optical frame (M, 3) against the plane z = near_m (Sutherland-Hodgman).

    Returns the clipped polygon (M', 3), possibly empty.
    """
    out: list[np.ndarray] = []
    n = len(points_cam)
    for i in range(n):
        a, b = points_cam[i], points_cam[(i + 1) % n]
        a_in, b_in = a[2] >= near_m, b[2] >= near_m
        if a_in:
            out.append(a)
        if a_in != b_in:
            t = (near_m - a[2]) / (b[2] - a[2])
            out.append(a + t * (b - a))
    return np.array(out).reshape(-1, 3)


def polygons_intersect(a: np.ndarray, b: np.ndarray) -> bool:
    """Separating-axis test for two convex polygons (M, 2) and (N, 2)."""
    for poly in (a, b):
        edges = np.roll(poly, -1, axis=0) - poly
        normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1)
        pa, pb = a @ normals.T, b @ normals.T
        if np.any((pa.max(0) < pb.min(0)) | (pb.max(0) < pa.min(0))):
            return False
    return True


def clip_polygon_near_fast(points_cam: np.ndarray, near_m: float) -> np.ndarray:
    """Vectorised Sutherland-Hodgman clip of a polygon (M, 3) in the optical frame against z >= near_m.

    Same result as ``clip_polygon_near`` (tested), fast for long polygons such as road strips.
    """
    p = np.asarray(points_cam, float)
    q = np.roll(p, -1, axis=0)
    a_in, b_in = p[:, 2] >= near_m, q[:, 2] >= near_m
    with np.errstate(divide="ignore", invalid="ignore"):
        t = (near_m - p[:, 2]) / (q[:, 2] - p[:, 2])
        inter = p + t[:, None] * (q - p)  # NaN rows only where the edge does not cross (dropped below)
    out = np.empty((2 * len(p), 3))
    out[0::2], out[1::2] = p, inter
    keep = np.empty(2 * len(p), bool)
    keep[0::2], keep[1::2] = a_in, a_in != b_in
    return out[keep]
