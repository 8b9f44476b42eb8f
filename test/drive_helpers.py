"""Synthetic test drives from analytic motion and simple coloured images (no synthetic world), and a raw bag writer."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.config import PwmConfig, apply_overrides, preset
from pwm_model.data.schema import Boxes, DriveSample, EgoState

T0_NS = 1_700_000_000_000_000_000  # a realistic epoch stamp
SPEED_MPS = 5.0
YAW_RATE_RADPS = 0.2
X0_M, Y0_M, YAW0_RAD = 100.0, -20.0, 0.7
CAR_START_M = (12.0, 1.5)  # the lead car, in the ego frame at t = 0
CAR_VEL_MPS = (4.0, 0.5)  # its constant world velocity
POLE_M = (130.0, -5.0)  # a static object in the world


def small_config(*overrides: str) -> PwmConfig:
    """The tiny preset shrunk for tests: a 128x64 camera at 10 Hz, 32x64 ctx frames, 8 clips per shard."""
    return apply_overrides(preset("tiny"), ["camera.width_px=128", "camera.height_px=64",
                                            "tokenizer.ctx_height_px=32", "tokenizer.ctx_width_px=64",
                                            "tokenizer.dyn_height_px=16", "tokenizer.dyn_width_px=32",
                                            "data.shard_clips=8", *overrides])


def arc_pose(t_s: float) -> tuple[float, float, float]:
    """Ego pose on a circular arc (constant speed and yaw rate) at ``t_s`` seconds after the start."""
    r = SPEED_MPS / YAW_RATE_RADPS
    yaw = YAW0_RAD + YAW_RATE_RADPS * t_s
    return X0_M + r * (math.sin(yaw) - math.sin(YAW0_RAD)), Y0_M - r * (math.cos(yaw) - math.cos(YAW0_RAD)), yaw


def arc_relative(dt_s: float) -> tuple[float, float, float]:
    """The pose ``dt_s`` later in the ego frame (exact for the arc)."""
    r = SPEED_MPS / YAW_RATE_RADPS
    a = YAW_RATE_RADPS * dt_s
    return r * math.sin(a), r * (1.0 - math.cos(a)), a


def car_world(t_s: float) -> tuple[float, float]:
    c, s = math.cos(YAW0_RAD), math.sin(YAW0_RAD)
    x0 = X0_M + c * CAR_START_M[0] - s * CAR_START_M[1]
    y0 = Y0_M + s * CAR_START_M[0] + c * CAR_START_M[1]
    return x0 + CAR_VEL_MPS[0] * t_s, y0 + CAR_VEL_MPS[1] * t_s


def frame_image(i: int, height: int, width: int) -> np.ndarray:
    """Frame ``i``: R = i, G = 3i (mod 256); B = 200 on the left quarter, 40 elsewhere (an orientation cue)."""
    img = np.empty((height, width, 3), np.uint8)
    img[..., 0] = i % 256
    img[..., 1] = (3 * i) % 256
    img[..., 2] = 40
    img[:, : width // 4, 2] = 200
    return img


def command_at(i: int) -> int:
    return 1 if i < 25 else (0 if i < 40 else 2)


def scenario_at(i: int) -> str:
    return "follow" if i < 30 else "cut_in"


def boxes_at(t_s: float, i: int) -> Boxes:
    """The lead car (track 5) and a pole (track 9); a parked car (track 11) on odd frames only."""
    cx, cy = car_world(t_s)
    rows = [[cx, cy, 0.8, 4.5, 1.9, 1.6, math.atan2(CAR_VEL_MPS[1], CAR_VEL_MPS[0])],
            [POLE_M[0], POLE_M[1], 2.0, 0.3, 0.3, 4.0, 0.0]]
    ids, labels = [5, 9], ["car", "pole"]
    if i % 2:
        rows.append([POLE_M[0] + 5, POLE_M[1], 0.75, 4.0, 1.8, 1.5, 0.3])
        ids.append(11)
        labels.append("parked_car")
    return Boxes(np.array(rows, np.float32), np.array(ids, np.int32), tuple(labels))


def arc_drive(n_frames: int, height: int = 64, width: int = 128, fps: float = 10.0,
              skip: tuple[int, ...] = ()) -> list[DriveSample]:
    """``n_frames`` camera frames of the arc drive (frames listed in ``skip`` are dropped, as by a camera)."""
    out = []
    for i in range(n_frames):
        if i in skip:
            continue
        t_s = i / fps
        t_ns = T0_NS + round(t_s * 1e9)
        x, y, yaw = arc_pose(t_s)
        ego = EgoState(t_ns=t_ns, x_m=x, y_m=y, yaw_rad=yaw, speed_mps=SPEED_MPS, accel_mps2=0.0,
                       yaw_rate_radps=YAW_RATE_RADPS)
        out.append(DriveSample(t_ns=t_ns, image_rgb=frame_image(i, height, width), ego=ego, command=command_at(i),
                               boxes=boxes_at(t_s, i), frame_index=i, scenario=scenario_at(i)))
    return out


# ----------------------------------------------------------------------------------------------------
# Bags with arbitrary content, written with rosbags directly

def typestore() -> Any:
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def header(ts: Any, t_ns: int, frame_id: str = "") -> Any:
    sec, nanosec = divmod(t_ns, 1_000_000_000)
    return ts.types["std_msgs/msg/Header"](stamp=ts.types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                           frame_id=frame_id)


def image_msg(ts: Any, t_ns: int, data: bytes, encoding: str, width: int, height: int, step: int,
              big_endian: bool = False) -> Any:
    return ts.types["sensor_msgs/msg/Image"](header=header(ts, t_ns, "cam"), height=height, width=width,
                                             encoding=encoding, is_bigendian=int(big_endian), step=step,
                                             data=np.frombuffer(data, np.uint8))


def odom_msg(ts: Any, t_ns: int, x: float, y: float, yaw: float, speed: float = 0.0, yaw_rate: float = 0.0) -> Any:
    t = ts.types
    pose = t["geometry_msgs/msg/Pose"](position=t["geometry_msgs/msg/Point"](x=x, y=y, z=0.0),
                                       orientation=t["geometry_msgs/msg/Quaternion"](x=0.0, y=0.0, z=math.sin(yaw / 2),
                                                                                     w=math.cos(yaw / 2)))
    v3 = t["geometry_msgs/msg/Vector3"]
    return t["nav_msgs/msg/Odometry"](
        header=header(ts, t_ns, "odom"), child_frame_id="base_link",
        pose=t["geometry_msgs/msg/PoseWithCovariance"](pose=pose, covariance=np.zeros(36)),
        twist=t["geometry_msgs/msg/TwistWithCovariance"](
            twist=t["geometry_msgs/msg/Twist"](linear=v3(x=speed, y=0.0, z=0.0), angular=v3(x=0.0, y=0.0, z=yaw_rate)),
            covariance=np.zeros(36)))


def write_raw_bag(path: Path, messages: list[tuple[str, str, int, Any]], storage: str = "mcap") -> Path:
    """A bag of ``(topic, msgtype, receive_ns, message)`` tuples, written with rosbags."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    ts = typestore()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    with Writer(path, version=9, storage_plugin=plugin) as w:
        conns: dict[str, Any] = {}
        for topic, msgtype, t_ns, msg in messages:
            if topic not in conns:
                conns[topic] = w.add_connection(topic, msgtype, typestore=ts)
            w.write(conns[topic], t_ns, ts.serialize_cdr(msg, msgtype))
    return path


def huge_png_header(width: int, height: int) -> bytes:
    """A valid PNG signature and IHDR declaring ``width`` x ``height`` px, with a tiny IDAT."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))
