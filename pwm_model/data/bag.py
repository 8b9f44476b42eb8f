"""rosbag2 drives (mcap or sqlite3) through ``rosbags``: write a drive as a bag, read a bag back as a drive.

Canonical topics (names from ``TopicsConfig``): sensor_msgs/Image or CompressedImage (front camera),
sensor_msgs/CameraInfo, nav_msgs/Odometry (``odom`` -> ``base_link``), std_msgs/UInt8 route command,
visualization_msgs/MarkerArray of CUBE boxes (ns = label, id = track id, scale = l/w/h) and std_msgs/String scenario
label. Header stamps define time; a zero header stamp falls back to the bag's receive time. Other topics are ignored.

    path = write_drive("out/drive_0", samples, cfg.camera, cfg.data.topics)
    reader = DriveReader(path)
    print(reader.summary.describe())
    for sample in reader.samples(stride=2): ...

No torch and no ROS packages here (messages are built and parsed with the rosbags type store).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import math
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.config import CameraConfig, TopicsConfig
from pwm_model.data import images
from pwm_model.data.schema import COMMAND_STRAIGHT, Boxes, DriveSample, EgoState
from pwm_model.errors import ConfigError, DataError, PwmError
from pwm_model.geometry import (
    PinholeCamera,
    from_ego_frame,
    interpolate_poses,
    interpolate_scalar,
    quat_from_yaw,
    wrap_angle,
    yaw_from_quat,
)

log = logging.getLogger(__name__)

IMAGE = "sensor_msgs/msg/Image"
COMPRESSED_IMAGE = "sensor_msgs/msg/CompressedImage"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
ODOMETRY = "nav_msgs/msg/Odometry"
UINT8 = "std_msgs/msg/UInt8"
STRING = "std_msgs/msg/String"
MARKER_ARRAY = "visualization_msgs/msg/MarkerArray"

WORLD_FRAME = "odom"
EGO_FRAME = "base_link"
CAMERA_FRAME = "camera_front_optical_frame"
BAG_VERSION = 8  # rosbag2 metadata version 8 (Jazzy); Kilted reads it too
STORAGES = ("mcap", "sqlite3")
COMMAND_PERIOD_NS = 1_000_000_000  # the route command is re-published at least once a second
_MARKER_CUBE, _MARKER_ADD, _MARKER_MODIFY, _MARKER_DELETEALL = 1, 0, 0, 3
_COMMAND_WORDS = {"left": 0, "straight": 1, "right": 2}

# canonical TopicsConfig field -> message types accepted there
_ACCEPTED: dict[str, tuple[str, ...]] = {
    "image": (IMAGE,),
    "compressed_image": (COMPRESSED_IMAGE,),
    "camera_info": (CAMERA_INFO,),
    "odometry": (ODOMETRY,),
    "command": (UINT8, STRING),
    "objects": (MARKER_ARRAY,),
    "scenario": (STRING,),
}


@functools.lru_cache(maxsize=1)
def _typestore() -> Any:
    """The ROS 2 Kilted message definitions (shared; loading them takes a fraction of a second)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def _normalise_msgtype(name: str) -> str:
    """``pkg/Type`` and ``pkg/msg/Type`` both -> ``pkg/msg/Type``."""
    parts = str(name).strip("/").split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else "/".join(parts)


# ----------------------------------------------------------------------------------------------------
# Writing

class _MessageFactory:
    """Builds rosbags message objects of the ROS 2 Kilted definitions."""

    def __init__(self) -> None:
        self.store = _typestore()
        self.t = self.store.types

    def serialize(self, msg: Any, msgtype: str) -> bytes:
        return bytes(self.store.serialize_cdr(msg, msgtype))

    def header(self, t_ns: int, frame_id: str) -> Any:
        sec, nanosec = divmod(int(t_ns), 1_000_000_000)
        return self.t["std_msgs/msg/Header"](stamp=self.t["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec),
                                             frame_id=frame_id)

    def pose(self, x: float, y: float, z: float, yaw: float) -> Any:
        qx, qy, qz, qw = quat_from_yaw(yaw)
        return self.t["geometry_msgs/msg/Pose"](position=self.t["geometry_msgs/msg/Point"](x=x, y=y, z=z),
                                                orientation=self.t["geometry_msgs/msg/Quaternion"](x=qx, y=qy, z=qz,
                                                                                                   w=qw))

    def vector3(self, x: float, y: float, z: float) -> Any:
        return self.t["geometry_msgs/msg/Vector3"](x=float(x), y=float(y), z=float(z))

    def image(self, t_ns: int, rgb: np.ndarray, encoding: str) -> Any:
        data, step = images.encode_image(rgb, encoding)
        return self.t[IMAGE](header=self.header(t_ns, CAMERA_FRAME), height=rgb.shape[0], width=rgb.shape[1],
                             encoding=encoding, is_bigendian=0, step=step, data=np.frombuffer(data, np.uint8))

    def compressed_image(self, t_ns: int, rgb: np.ndarray, fmt: str) -> Any:
        data = images.encode_compressed(rgb, fmt)
        return self.t[COMPRESSED_IMAGE](header=self.header(t_ns, CAMERA_FRAME),
                                        format=images.compressed_format_string(fmt),
                                        data=np.frombuffer(data, np.uint8))

    def camera_info(self, t_ns: int, cam: PinholeCamera) -> Any:
        k = cam.K
        p = np.concatenate([k, np.zeros((3, 1))], axis=1)
        roi = self.t["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.t[CAMERA_INFO](header=self.header(t_ns, CAMERA_FRAME), height=cam.height_px, width=cam.width_px,
                                   distortion_model="plumb_bob", d=np.zeros(5), k=k.reshape(-1).astype(np.float64),
                                   r=np.eye(3).reshape(-1), p=p.reshape(-1).astype(np.float64), binning_x=0,
                                   binning_y=0, roi=roi)

    def odometry(self, ego: EgoState, t_ns: int) -> Any:
        cov = np.zeros(36, np.float64)
        pose = self.t["geometry_msgs/msg/PoseWithCovariance"](
            pose=self.pose(float(ego.x_m), float(ego.y_m), float(ego.z_m), float(ego.yaw_rad)), covariance=cov)
        twist = self.t["geometry_msgs/msg/TwistWithCovariance"](
            twist=self.t["geometry_msgs/msg/Twist"](linear=self.vector3(ego.speed_mps, 0.0, 0.0),
                                                    angular=self.vector3(0.0, 0.0, ego.yaw_rate_radps)),
            covariance=cov.copy())
        return self.t[ODOMETRY](header=self.header(t_ns, WORLD_FRAME), child_frame_id=EGO_FRAME, pose=pose,
                                twist=twist)

    def _marker(self, t_ns: int, ns: str, marker_id: int, marker_type: int, action: int, pose: Any, scale: Any,
                rgba: tuple[float, float, float, float]) -> Any:
        t = self.t
        return t["visualization_msgs/msg/Marker"](
            header=self.header(t_ns, WORLD_FRAME), ns=ns, id=int(marker_id), type=marker_type, action=action,
            pose=pose, scale=scale, color=t["std_msgs/msg/ColorRGBA"](r=rgba[0], g=rgba[1], b=rgba[2], a=rgba[3]),
            lifetime=t["builtin_interfaces/msg/Duration"](sec=0, nanosec=0), frame_locked=False, points=[],
            colors=[], texture_resource="",
            texture=t[COMPRESSED_IMAGE](header=self.header(0, ""), format="", data=np.zeros(0, np.uint8)),
            uv_coordinates=[], text="", mesh_resource="",
            mesh_file=t["visualization_msgs/msg/MeshFile"](filename="", data=np.zeros(0, np.uint8)),
            mesh_use_embedded_materials=False)

    def markers(self, t_ns: int, boxes: Boxes) -> Any:
        """A DELETEALL marker (so viewers drop the previous set) followed by one CUBE per box."""
        out = [self._marker(t_ns, "", 0, _MARKER_CUBE, _MARKER_DELETEALL, self.pose(0, 0, 0, 0),
                            self.vector3(1, 1, 1), (0, 0, 0, 0))]
        arr = np.asarray(boxes.xyz_lwh_yaw, np.float64).reshape(-1, 7)
        for row, track_id, label in zip(arr, np.asarray(boxes.track_ids).reshape(-1), boxes.labels):
            hue = (zlib.crc32(str(label).encode()) % 360) / 360.0  # a stable colour per label (cosmetic)
            rgba = (0.5 + 0.5 * math.cos(2 * math.pi * hue), 0.5 + 0.5 * math.sin(2 * math.pi * hue), 0.6, 0.6)
            out.append(self._marker(t_ns, str(label), int(track_id), _MARKER_CUBE, _MARKER_ADD,
                                    self.pose(row[0], row[1], row[2], row[6]), self.vector3(row[3], row[4], row[5]),
                                    rgba))
        return self.t[MARKER_ARRAY](markers=out)

    def uint8(self, value: int) -> Any:
        return self.t[UINT8](data=int(value))

    def string(self, text: str) -> Any:
        return self.t[STRING](data=str(text))


def _check_output_dir(final: Path, what: str, marker: str) -> None:
    """Refuse to replace an existing path that is not an older output of the same kind."""
    if not final.exists() and not final.is_symlink():
        return
    if final.is_dir() and ((final / marker).is_file() or not any(final.iterdir())):
        return
    raise DataError(f"refusing to overwrite {final}: it exists and is not a {what}")


def write_drive(path: str | os.PathLike[str], samples: Iterable[DriveSample], camera: CameraConfig,
                topics: TopicsConfig, *, compressed: bool = False, compressed_format: str = "jpeg",
                storage: str = "mcap", encoding: str = "rgb8") -> Path:
    """Write a drive as a rosbag2 bag directory with the canonical topics; returns the bag path.

    Per camera frame: the image (raw ``encoding`` on ``topics.image``, or ``compressed_format`` on
    ``topics.compressed_image``), CameraInfo, Odometry and the MarkerArray of boxes; the command on change and at
    least once a second; the scenario label on change. Stamps (header and receive time) are the sample stamps,
    which must increase. The bag is written to a temporary sibling and renamed at the end: a failure leaves nothing.
    An existing bag directory at ``path`` is replaced.
    """
    if storage not in STORAGES:
        raise ConfigError(f"bag storage {storage!r} is not supported: use mcap or sqlite3")
    if compressed:
        images.compressed_format_string(compressed_format)  # validates
    else:
        images.bytes_per_pixel(encoding)  # validates
    from rosbags.rosbag2 import StoragePlugin, Writer

    final = Path(path)
    _check_output_dir(final, "rosbag2 bag", "metadata.yaml")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent))
    bag_dir = tmp_root / final.name
    cam = PinholeCamera.from_config(camera)
    f = _MessageFactory()
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    try:
        with Writer(bag_dir, version=BAG_VERSION, storage_plugin=plugin) as w:
            image_topic = topics.compressed_image if compressed else topics.image
            conns = {
                "image": w.add_connection(image_topic, COMPRESSED_IMAGE if compressed else IMAGE, typestore=f.store),
                "info": w.add_connection(topics.camera_info, CAMERA_INFO, typestore=f.store),
                "odom": w.add_connection(topics.odometry, ODOMETRY, typestore=f.store),
                "command": w.add_connection(topics.command, UINT8, typestore=f.store),
                "objects": w.add_connection(topics.objects, MARKER_ARRAY, typestore=f.store),
            }
            scenario_conn = None
            last_t, last_cmd, last_cmd_t, last_scenario, count = -1, None, 0, "", 0
            for s in samples:
                t_ns = int(s.t_ns)
                if t_ns <= last_t:
                    raise DataError(f"drive sample stamps must increase, but sample {count} has t_ns {t_ns} after "
                                    f"{last_t}")
                rgb = np.asarray(s.image_rgb)
                if rgb.shape != (camera.height_px, camera.width_px, 3) or rgb.dtype != np.uint8:
                    raise DataError(f"drive sample {count} has a {rgb.dtype} image of shape {tuple(rgb.shape)}, "
                                    f"but the camera is {camera.width_px}x{camera.height_px} px (H, W, 3) uint8")
                msg = f.compressed_image(t_ns, rgb, compressed_format) if compressed else f.image(t_ns, rgb, encoding)
                w.write(conns["image"], t_ns, f.serialize(msg, COMPRESSED_IMAGE if compressed else IMAGE))
                w.write(conns["info"], t_ns, f.serialize(f.camera_info(t_ns, cam), CAMERA_INFO))
                w.write(conns["odom"], t_ns, f.serialize(f.odometry(s.ego, t_ns), ODOMETRY))
                w.write(conns["objects"], t_ns, f.serialize(f.markers(t_ns, s.boxes), MARKER_ARRAY))
                cmd = int(s.command)
                if cmd != last_cmd or t_ns - last_cmd_t >= COMMAND_PERIOD_NS:
                    w.write(conns["command"], t_ns, f.serialize(f.uint8(cmd), UINT8))
                    last_cmd, last_cmd_t = cmd, t_ns
                if s.scenario != last_scenario:
                    if scenario_conn is None:
                        scenario_conn = w.add_connection(topics.scenario, STRING, typestore=f.store)
                    w.write(scenario_conn, t_ns, f.serialize(f.string(s.scenario), STRING))
                    last_scenario = s.scenario
                last_t, count = t_ns, count + 1
            if count == 0:
                raise DataError(f"no drive samples to write to {final}")
        if final.exists():
            shutil.rmtree(final)
        os.replace(bag_dir, final)
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)
    return final


# ----------------------------------------------------------------------------------------------------
# Reading: data containers

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


# ----------------------------------------------------------------------------------------------------
# Reading

def is_bag_path(path: Path) -> bool:
    """A rosbag2 directory (with metadata.yaml) or a single .mcap / .db3 file."""
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (
        path.is_file() and path.suffix in (".mcap", ".db3"))


def _resolve_bag(path: Path) -> Path:
    if not path.exists():
        raise DataError(f"bag path {path} does not exist")
    if is_bag_path(path):
        return path
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix in (".mcap", ".db3"))
        if len(files) == 1:  # a bag directory whose metadata.yaml is missing
            return files[0]
        raise DataError(f"{path} is not a rosbag2 bag: it has no metadata.yaml"
                        + (f" and {len(files)} storage files" if files else " and no .mcap or .db3 file"))
    raise DataError(f"{path} is not a rosbag2 bag: expected a bag directory or a .mcap or .db3 file")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return (text[0] if text else type(exc).__name__).rstrip(".")


def _stamp_from_cdr(raw: bytes | memoryview) -> int:
    """The header stamp (ns) of a CDR message whose first field is std_msgs/Header."""
    if len(raw) < 12:
        raise ValueError(f"a {len(raw)}-byte message is too short for a header")
    endian = "<" if raw[1] == 1 else ">"
    sec, nanosec = struct.unpack_from(endian + "iI", raw, 4)
    return sec * 1_000_000_000 + nanosec


def _header_ns(header: Any, receive_ns: int) -> int:
    t = int(header.stamp.sec) * 1_000_000_000 + int(header.stamp.nanosec)
    return t if t != 0 else int(receive_ns)


class DriveReader:
    """A rosbag2 drive: summary, ego track, commands, boxes, scenario labels and streamed camera frames.

    ``path`` is a bag directory or a single .mcap / .db3 file. The small topics are read once when the reader
    is made; camera frames are streamed (never all held in memory). Missing odometry is allowed (the summary says
    so and ego states are zeros); a missing camera topic raises a DataError unless ``require_camera`` is False.
    """

    def __init__(self, path: str | os.PathLike[str], topics: TopicsConfig | None = None, *,
                 require_camera: bool = True) -> None:
        self.path = Path(path)
        self.topics = topics or TopicsConfig()
        self._bag = _resolve_bag(self.path)
        self._fallback_store = _typestore()
        with self._open("opening the bag") as reader:
            self._load(reader, require_camera)

    # -- plumbing ------------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _open(self, what: str) -> Iterator[Any]:
        """An open rosbags AnyReader; rosbags and decoding failures become one DataError sentence."""
        from rosbags.highlevel import AnyReader

        try:
            with AnyReader([self._bag], default_typestore=self._fallback_store) as reader:
                yield reader
        except PwmError:
            raise
        except Exception as exc:
            raise DataError(f"bag {self.path} is corrupt or truncated ({_first_line(exc)}) while {what}"
                            + ("; `mcap recover` can often repair a truncated .mcap recording"
                               if "magic" in str(exc).lower() else "")) from exc

    def _check_types(self, topic_types: dict[str, str]) -> None:
        for name, accepted in _ACCEPTED.items():
            topic = getattr(self.topics, name)
            have = topic_types.get(topic)
            if have is not None and have not in accepted:
                raise DataError(f"topic {topic} in {self.path} carries {have}, but pwm expects "
                                f"{' or '.join(accepted)} there")

    def _load(self, reader: Any, require_camera: bool) -> None:
        topic_types: dict[str, str] = {}
        summaries: dict[str, TopicSummary] = {}
        for name, info in reader.topics.items():
            msgtype = _normalise_msgtype(info.msgtype or "")
            topic_types[name] = msgtype
            summaries[name] = TopicSummary(msgtype, int(info.msgcount))
        self._check_types(topic_types)
        tp = self.topics
        if tp.image in topic_types and summaries[tp.image].count > 0:
            cam_topic, compressed = tp.image, False
        elif tp.compressed_image in topic_types and summaries[tp.compressed_image].count > 0:
            cam_topic, compressed = tp.compressed_image, True
        else:
            cam_topic, compressed = None, False
            if require_camera:
                listing = ", ".join(f"{n} ({t.msgtype})" for n, t in sorted(summaries.items())) or "no topics"
                raise DataError(f"bag {self.path} has no camera topic {tp.image} or {tp.compressed_image}; "
                                f"it has {listing}")
        self._camera_topic, self._camera_compressed = cam_topic, compressed
        canonical = {name: getattr(tp, name) in topic_types for name in _ACCEPTED}
        storage = "sqlite3" if (self._bag.suffix == ".db3" or (self._bag.is_dir() and any(self._bag.glob("*.db3")))) \
            else "mcap"
        self.summary = BagSummary(
            path=self.path, storage=storage, start_ns=int(reader.start_time) if reader.message_count else 0,
            end_ns=int(reader.end_time) if reader.message_count else 0, message_count=int(reader.message_count),
            topics=summaries, camera_topic=cam_topic, camera_compressed=compressed,
            camera_frames=summaries[cam_topic].count if cam_topic else 0, has_camera_info=canonical["camera_info"],
            has_odometry=canonical["odometry"] and summaries[tp.odometry].count > 0,
            has_command=canonical["command"], has_objects=canonical["objects"], has_scenario=canonical["scenario"],
            canonical=canonical)

        want = {tp.odometry: "odometry", tp.command: "command", tp.objects: "objects", tp.scenario: "scenario",
                tp.camera_info: "camera_info"}
        conns = [c for c in reader.connections if c.topic in want]
        odom: list[tuple[int, float, float, float, float, float, float]] = []
        cmds: list[tuple[int, int]] = []
        box_sets: list[tuple[int, Boxes, str]] = []
        labels: list[tuple[int, str]] = []
        self.camera_info: dict[str, Any] | None = None
        if conns:
            for i, (conn, receive_ns, raw) in enumerate(reader.messages(connections=conns)):
                kind = want[conn.topic]
                msg = self._deserialize(reader, raw, conn, i)
                if kind == "odometry":
                    p, q, tw = msg.pose.pose.position, msg.pose.pose.orientation, msg.twist.twist
                    odom.append((_header_ns(msg.header, receive_ns), p.x, p.y, p.z, yaw_from_quat(q.x, q.y, q.z, q.w),
                                 tw.linear.x, tw.angular.z))
                elif kind == "command":
                    cmds.append((int(receive_ns), self._command_value(msg.data, conn.topic, receive_ns)))
                elif kind == "objects":
                    box_sets.append(self._boxes_from_markers(msg, receive_ns))
                elif kind == "scenario":
                    labels.append((int(receive_ns), str(msg.data)))
                elif self.camera_info is None:
                    self.camera_info = {"width_px": int(msg.width), "height_px": int(msg.height),
                                        "K": np.asarray(msg.k, np.float64).reshape(3, 3),
                                        "distortion_model": str(msg.distortion_model),
                                        "D": np.asarray(msg.d, np.float64)}
        self._check_finite(odom, tp.odometry, "odometry")
        self._check_finite([(t, *b.xyz_lwh_yaw.ravel()) for t, b, _ in box_sets], tp.objects, "box")
        self.ego = self._ego_track(odom)
        cmds.sort(key=lambda c: c[0])
        self.commands = Commands(np.array([c[0] for c in cmds], np.int64), np.array([c[1] for c in cmds], np.int64))
        box_sets = self._boxes_to_world(box_sets)
        box_sets.sort(key=lambda b: b[0])
        self.box_sets = BoxSets(np.array([b[0] for b in box_sets], np.int64), [b[1] for b in box_sets])
        labels.sort(key=lambda x: x[0])
        self.scenarios = Labels(np.array([x[0] for x in labels], np.int64), [x[1] for x in labels])
        if cam_topic:
            self._peek_camera(reader)

    def _deserialize(self, reader: Any, raw: bytes, conn: Any, index: int) -> Any:
        try:
            return reader.deserialize(raw, conn.msgtype)
        except Exception as exc:
            raise DataError(f"bag {self.path} has a corrupt {conn.msgtype} message on {conn.topic} "
                            f"(message {index} there: {_first_line(exc)})") from exc

    def _check_finite(self, rows: list[tuple[Any, ...]], topic: str, what: str) -> None:
        bad = [r[0] for r in rows if not np.all(np.isfinite(np.asarray(r[1:], np.float64)))]
        if bad:
            raise DataError(f"{len(bad)} {what} message(s) on {topic} in {self.path} hold NaN or infinite values "
                            f"(the first at {min(bad)} ns)")

    def _command_value(self, data: Any, topic: str, receive_ns: int) -> int:
        if isinstance(data, str):
            value = _COMMAND_WORDS.get(data.strip().lower())
            if value is None:
                raise DataError(f"route command {data!r} on {topic} at {receive_ns} ns is not left, straight or right")
            return value
        if int(data) not in (0, 1, 2):
            raise DataError(f"route command {int(data)} on {topic} at {receive_ns} ns is not 0 (left), 1 (straight) "
                            f"or 2 (right)")
        return int(data)

    def _boxes_from_markers(self, msg: Any, receive_ns: int) -> tuple[int, Boxes, str]:
        """One MarkerArray = the complete set of boxes at its stamp (CUBE markers being added)."""
        rows, ids, labels = [], [], []
        stamp, frame = 0, WORLD_FRAME
        for m in msg.markers:
            if stamp == 0:
                stamp = int(m.header.stamp.sec) * 1_000_000_000 + int(m.header.stamp.nanosec)
            if int(m.type) != _MARKER_CUBE or int(m.action) not in (_MARKER_ADD, _MARKER_MODIFY):
                continue
            frame = m.header.frame_id or WORLD_FRAME
            p, q, s = m.pose.position, m.pose.orientation, m.scale
            rows.append((p.x, p.y, p.z, s.x, s.y, s.z, yaw_from_quat(q.x, q.y, q.z, q.w)))
            ids.append(int(m.id))
            labels.append(str(m.ns))
        boxes = Boxes(np.array(rows, np.float32).reshape(-1, 7), np.array(ids, np.int32), tuple(labels))
        return (stamp if stamp != 0 else int(receive_ns)), boxes, frame

    def _boxes_to_world(self, sets: list[tuple[int, Boxes, str]]) -> list[tuple[int, Boxes]]:
        """Boxes published in the ego frame are moved to the world frame with the ego pose at their stamp."""
        out = []
        for t_ns, boxes, frame in sets:
            if frame == EGO_FRAME and len(boxes) and len(self.ego):
                pose, _ = self.ego.poses_at(np.array([t_ns]))
                b = np.array(boxes.xyz_lwh_yaw, np.float64)
                b[:, :2] = from_ego_frame(b[:, :2], *pose[0])
                b[:, 6] = wrap_angle(b[:, 6] + pose[0, 2])
                boxes = Boxes(b.astype(np.float32), boxes.track_ids, boxes.labels)
            out.append((t_ns, boxes))
        return out

    @staticmethod
    def _ego_track(rows: list[tuple[int, float, float, float, float, float, float]]) -> EgoTrack:
        if not rows:
            z = np.zeros(0)
            return EgoTrack(np.zeros(0, np.int64), z, z.copy(), z.copy(), z.copy(), z.copy(), z.copy(), z.copy())
        rows.sort(key=lambda r: r[0])
        a = np.array([r[1:] for r in rows], np.float64)
        t = np.array([r[0] for r in rows], np.int64)
        keep = np.append(np.diff(t) > 0, True)  # duplicate stamps: keep the last message
        t, a = t[keep], a[keep]
        x, y, z, yaw, speed, yaw_rate = (a[:, i] for i in range(6))
        t_s = (t - t[0]) / 1e9
        if len(t) >= 2 and not np.any(speed) and not np.any(yaw_rate):  # odometry without a twist
            dx, dy = np.gradient(x, t_s), np.gradient(y, t_s)
            speed = dx * np.cos(yaw) + dy * np.sin(yaw)
            yaw_rate = np.gradient(np.unwrap(yaw), t_s)
        accel = np.gradient(speed, t_s) if len(t) >= 2 else np.zeros_like(speed)
        return EgoTrack(t, x, y, z, yaw, speed, accel, yaw_rate)

    def _peek_camera(self, reader: Any) -> None:
        """Decode the first camera frame: its size and encoding go into the summary; bad encodings fail early."""
        for conn, _receive_ns, raw in reader.messages(connections=self._camera_connections(reader)):
            msg = self._deserialize(reader, raw, conn, 0)
            rgb = self._decode(msg, 0)
            self.summary.image_encoding = str(msg.format if self._camera_compressed else msg.encoding)
            self.summary.image_height_px, self.summary.image_width_px = int(rgb.shape[0]), int(rgb.shape[1])
            break

    def _camera_connections(self, reader: Any) -> list[Any]:
        return [c for c in reader.connections if c.topic == self._camera_topic]

    def _decode(self, msg: Any, index: int) -> np.ndarray:
        try:
            if self._camera_compressed:
                return images.decode_compressed(msg.data, msg.format)
            return images.decode_image(msg.data, msg.encoding, msg.width, msg.height, msg.step,
                                       bool(msg.is_bigendian))
        except DataError as exc:
            raise DataError(f"camera frame {index} on {self._camera_topic} in {self.path}: {exc}") from None

    # -- public API ----------------------------------------------------------------------------------
    @property
    def camera_topic(self) -> str | None:
        return self._camera_topic

    def frames(self, select: Callable[[int], bool] | None = None,
               decode: bool = True) -> Iterator[tuple[int, int, np.ndarray | None]]:
        """Stream camera frames in bag order as ``(frame_index, t_ns, rgb)``.

        ``select(frame_index)`` picks the frames to decode (all by default); the others, and every frame when
        ``decode`` is False, come with ``rgb = None`` and cost only their stamp.
        """
        if not self._camera_topic:
            raise DataError(f"bag {self.path} has no camera topic {self.topics.image} or "
                            f"{self.topics.compressed_image}")
        with self._open(f"reading {self._camera_topic}") as reader:
            for i, (conn, receive_ns, raw) in enumerate(reader.messages(connections=self._camera_connections(reader))):
                want = decode and (select is None or select(i))
                if want:
                    msg = self._deserialize(reader, raw, conn, i)
                    t_ns = _header_ns(msg.header, receive_ns)
                    yield i, t_ns, self._decode(msg, i)
                else:
                    try:
                        t_ns = _stamp_from_cdr(raw) or int(receive_ns)
                    except (ValueError, struct.error) as exc:
                        raise DataError(f"bag {self.path} has a corrupt message on {conn.topic} "
                                        f"(message {i} there: {_first_line(exc)})") from exc
                    yield i, t_ns, None

    def frame_stamps(self, limit: int | None = None) -> np.ndarray:
        """Camera frame stamps (ns) in bag order, without decoding images (the first ``limit`` only if given)."""
        out = []
        for i, t_ns, _ in self.frames(decode=False):
            if limit is not None and i >= limit:
                break
            out.append(t_ns)
        return np.array(out, np.int64)

    def samples(self, stride: int = 1) -> Iterator[DriveSample]:
        """Every ``stride``-th camera frame with the ego state interpolated at its stamp and the latest command,
        box set and scenario label at or before it."""
        if int(stride) < 1:
            raise ConfigError(f"sample stride must be at least 1, got {stride}")
        for i, t_ns, rgb in self.frames(select=lambda k: k % int(stride) == 0):
            if rgb is None:
                continue
            yield DriveSample(t_ns=t_ns, image_rgb=rgb, ego=self.ego.state_at(t_ns), command=self.commands.at(t_ns),
                              boxes=self.box_sets.at(t_ns), frame_index=i, scenario=self.scenarios.at(t_ns))
