"""ROS 2 messages <-> plain numpy data: camera images in, plans / previews / diagnostics out.

Raw encodings shared with the data tools (rgb8, bgr8, mono8, yuv422, 16-bit, ...) are decoded by
``pwm_model.data.images``; this module adds the Bayer patterns (demosaiced with OpenCV, as cv_bridge does) and, for
any other encoding, ``cv_bridge`` where it is installed. ``CompressedImage`` (JPEG / PNG) goes through OpenCV.
"""

from __future__ import annotations

import array
import math
from collections.abc import Mapping

import cv2
import numpy as np
from builtin_interfaces.msg import Duration as DurationMsg
from builtin_interfaces.msg import Time as TimeMsg
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus, KeyValue
from geometry_msgs.msg import Point, PoseStamped
from nav_msgs.msg import Odometry, Path
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import ColorRGBA, Header
from visualization_msgs.msg import Marker, MarkerArray

from pwm_model.data import images
from pwm_model.errors import DataError
from pwm_model.geometry import quat_from_yaw
from pwm_model.runtime.types import Plan

# Bayer encoding -> (OpenCV demosaicing code, bits). OpenCV names a pattern by its second row, hence RGGB -> BG
# (the same table cv_bridge uses).
BAYER_CODES: dict[str, tuple[int, int]] = {
    "bayer_rggb8": (cv2.COLOR_BayerBG2RGB, 8),
    "bayer_bggr8": (cv2.COLOR_BayerRG2RGB, 8),
    "bayer_gbrg8": (cv2.COLOR_BayerGR2RGB, 8),
    "bayer_grbg8": (cv2.COLOR_BayerGB2RGB, 8),
    "bayer_rggb16": (cv2.COLOR_BayerBG2RGB, 16),
    "bayer_bggr16": (cv2.COLOR_BayerRG2RGB, 16),
    "bayer_gbrg16": (cv2.COLOR_BayerGR2RGB, 16),
    "bayer_grbg16": (cv2.COLOR_BayerGB2RGB, 16),
}
NATIVE_ENCODINGS: tuple[str, ...] = images.SUPPORTED_ENCODINGS + tuple(BAYER_CODES)


# ----------------------------------------------------------------------------------------------------
# Time

def stamp_to_ns(stamp: TimeMsg) -> int:
    """``builtin_interfaces/Time`` -> integer nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def ns_to_stamp(t_ns: int) -> TimeMsg:
    """Integer nanoseconds -> ``builtin_interfaces/Time`` (floor division keeps nanosec in [0, 1e9))."""
    sec, nanosec = divmod(int(t_ns), 1_000_000_000)
    return TimeMsg(sec=sec, nanosec=nanosec)


# ----------------------------------------------------------------------------------------------------
# Camera images in

def _cv_bridge():  # noqa: ANN202 - returns a CvBridge or None
    """A ``CvBridge`` where cv_bridge is installed (ROS installs, the Docker image), else ``None``."""
    try:
        from cv_bridge import CvBridge
    except ImportError:
        return None
    return CvBridge()


def cv_bridge_available() -> bool:
    return _cv_bridge() is not None


def decode_bayer(data: bytes | bytearray | memoryview | np.ndarray, encoding: str, width: int, height: int,
                 step: int, is_bigendian: bool = False) -> np.ndarray:
    """Demosaic a Bayer ``sensor_msgs/Image`` payload to ``(H, W, 3) uint8`` RGB.

    The mosaic is read as mono8 / mono16 by ``images.decode_image`` (row padding, byte order and the 16 -> 8 bit
    scaling done once, there), then OpenCV interpolates the missing colours.
    """
    code, bits = BAYER_CODES[encoding.lower()]
    mono = images.decode_image(data, "mono16" if bits == 16 else "mono8", width, height, step, is_bigendian)
    mosaic = np.ascontiguousarray(mono[..., 0])  # (H, W) uint8
    if min(mosaic.shape) < 2:
        raise DataError(f"{encoding} image of {width}x{height} px is too small to demosaic (2x2 at least)")
    return cv2.cvtColor(mosaic, code)


def _shared_encoding(encoding: str) -> bool:
    try:
        images.bytes_per_pixel(encoding)
    except DataError:
        return False
    return True


def image_to_rgb(msg: Image) -> np.ndarray:
    """``sensor_msgs/Image`` -> ``(H, W, 3) uint8`` RGB; raises ``DataError`` with one sentence on bad input."""
    encoding = str(msg.encoding).strip().lower()
    width, height, step = int(msg.width), int(msg.height), int(msg.step)
    big = bool(msg.is_bigendian)
    if width <= 0 or height <= 0:
        raise DataError(f"{msg.encoding or 'image'} image has zero size ({width}x{height} px)")
    if encoding in BAYER_CODES:
        return decode_bayer(msg.data, encoding, width, height, step, big)
    if _shared_encoding(encoding):
        return images.decode_image(msg.data, encoding, width, height, step, big)
    bridge = _cv_bridge()
    if bridge is None:
        raise DataError(f"image encoding {msg.encoding!r} is not supported without cv_bridge: publish one of "
                        f"{', '.join(NATIVE_ENCODINGS)}, or install cv_bridge (ros-$ROS_DISTRO-cv-bridge)")
    try:
        rgb = bridge.imgmsg_to_cv2(msg, desired_encoding="rgb8")
    except Exception as exc:  # cv_bridge raises CvBridgeError and cv2 errors
        raise DataError(f"cv_bridge could not convert a {msg.encoding!r} image: {exc}") from None
    return np.ascontiguousarray(rgb, dtype=np.uint8)


def compressed_to_rgb(msg: CompressedImage) -> np.ndarray:
    """``sensor_msgs/CompressedImage`` (JPEG / PNG) -> ``(H, W, 3) uint8`` RGB."""
    return images.decode_compressed(msg.data, msg.format)


def _byte_array(data: bytes) -> array.array:
    out = array.array("B")
    out.frombytes(data)  # one copy; assigning bytes to a uint8[] field would check every element
    return out


def rgb_to_image(rgb: np.ndarray, t_ns: int, frame_id: str, encoding: str = "rgb8") -> Image:
    """``(H, W, 3) uint8`` RGB -> ``sensor_msgs/Image`` in ``encoding`` (any ``images.py`` encoding)."""
    data, step = images.encode_image(rgb, encoding)
    msg = Image(header=Header(stamp=ns_to_stamp(t_ns), frame_id=frame_id), height=int(rgb.shape[0]),
                width=int(rgb.shape[1]), encoding=encoding, is_bigendian=0, step=step)
    msg.data = _byte_array(data)
    return msg


def rgb_to_compressed(rgb: np.ndarray, t_ns: int, frame_id: str, fmt: str = "jpeg", quality: int = 90
                      ) -> CompressedImage:
    """``(H, W, 3) uint8`` RGB -> ``sensor_msgs/CompressedImage`` as image_transport's compressed plugin writes it."""
    msg = CompressedImage(header=Header(stamp=ns_to_stamp(t_ns), frame_id=frame_id),
                          format=images.compressed_format_string(fmt))
    msg.data = _byte_array(images.encode_compressed(rgb, fmt, quality))
    return msg


def odometry_twist(msg: Odometry) -> tuple[int, float, float]:
    """``(t_ns, forward speed m/s, yaw rate rad/s)`` of an odometry message (twist in the child frame, REP-105:
    ``linear.x`` and ``angular.z``, positive turning left)."""
    return stamp_to_ns(msg.header.stamp), float(msg.twist.twist.linear.x), float(msg.twist.twist.angular.z)


# ----------------------------------------------------------------------------------------------------
# Plans out

def plan_to_path(plan: Plan, frame_id: str) -> Path:
    """The K waypoints as a ``nav_msgs/Path`` stamped with the camera stamp; pose k stamped at ``t + k * dt``."""
    path = Path(header=Header(stamp=ns_to_stamp(plan.t_ns), frame_id=frame_id))
    poses = []
    for (x_m, y_m, yaw_rad), t_ns in zip(np.asarray(plan.waypoints_xyyaw, np.float64), plan.waypoint_t_ns):
        pose = PoseStamped(header=Header(stamp=ns_to_stamp(int(t_ns)), frame_id=frame_id))
        pose.pose.position.x, pose.pose.position.y = float(x_m), float(y_m)
        qx, qy, qz, qw = quat_from_yaw(float(yaw_rad))
        pose.pose.orientation.x, pose.pose.orientation.y = qx, qy
        pose.pose.orientation.z, pose.pose.orientation.w = qz, qw
        poses.append(pose)
    path.poses = poses
    return path


def path_to_xyyaw(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(waypoints (K, 3) float64 x, y, yaw; stamps (K,) int64)`` of a ``nav_msgs/Path`` (inverse of plan_to_path)."""
    xyyaw = np.zeros((len(path.poses), 3))
    t_ns = np.zeros(len(path.poses), np.int64)
    for k, ps in enumerate(path.poses):
        q = ps.pose.orientation
        yaw = math.atan2(2.0 * (q.w * q.z + q.x * q.y), 1.0 - 2.0 * (q.y * q.y + q.z * q.z))
        xyyaw[k] = (ps.pose.position.x, ps.pose.position.y, yaw)
        t_ns[k] = stamp_to_ns(ps.header.stamp)
    return xyyaw, t_ns


_PATH_RGBA = ColorRGBA(r=0.1, g=0.9, b=0.3, a=0.9)
_WAYPOINT_RGBA = ColorRGBA(r=1.0, g=0.8, b=0.1, a=1.0)


def plan_to_markers(plan: Plan, frame_id: str, ns: str = "pwm") -> MarkerArray:
    """RViz / Foxglove markers of a plan: the path from the ego origin (LINE_STRIP) and the waypoints (SPHERE_LIST).

    Fixed ids, so every plan replaces the previous one; ``frame_locked`` keeps them attached to ``frame_id``.
    """
    header = Header(stamp=ns_to_stamp(plan.t_ns), frame_id=frame_id)
    points = [Point(x=0.0, y=0.0, z=0.0)] + [Point(x=float(x), y=float(y), z=0.0)
                                              for x, y, _ in np.asarray(plan.waypoints_xyyaw, np.float64)]
    line = Marker(header=header, ns=ns, id=0, type=Marker.LINE_STRIP, action=Marker.ADD, points=points,
                  color=_PATH_RGBA, frame_locked=True, lifetime=DurationMsg(sec=1))
    line.pose.orientation.w = 1.0
    line.scale.x = 0.3  # line width (m)
    dots = Marker(header=header, ns=ns, id=1, type=Marker.SPHERE_LIST, action=Marker.ADD, points=points[1:],
                  color=_WAYPOINT_RGBA, frame_locked=True, lifetime=DurationMsg(sec=1))
    dots.pose.orientation.w = 1.0
    dots.scale.x = dots.scale.y = dots.scale.z = 0.5  # sphere diameter (m)
    return MarkerArray(markers=[line, dots])


def diagnostic_array(t_ns: int, name: str, hardware_id: str, level: int, message: str,
                     values: Mapping[str, object]) -> DiagnosticArray:
    """One ``DiagnosticStatus`` (level 0 OK, 1 WARN, 2 ERROR, 3 STALE) in a ``DiagnosticArray``."""
    status = DiagnosticStatus(level=bytes([int(level)]), name=name, message=message, hardware_id=hardware_id,
                              values=[KeyValue(key=str(k), value=_format_value(v)) for k, v in values.items()])
    return DiagnosticArray(header=Header(stamp=ns_to_stamp(t_ns)), status=[status])


def _format_value(value: object) -> str:
    if isinstance(value, float):
        return "nan" if value != value else f"{value:.4g}"
    return str(value)
