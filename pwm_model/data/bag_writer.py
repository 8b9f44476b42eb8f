"""Write a drive as a rosbag2 bag (mcap or sqlite3) through ``rosbags`` (the format: ``bag_format.py``).

    path = write_drive("out/drive_0", samples, cfg.camera, cfg.data.topics)
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.config import CameraConfig, TopicsConfig
from pwm_model.data import images
from pwm_model.data.bag_format import (
    BAG_VERSION,
    CAMERA_FRAME,
    CAMERA_INFO,
    COMMAND_PERIOD_NS,
    COMPRESSED_IMAGE,
    EGO_FRAME,
    IMAGE,
    MARKER_ADD,
    MARKER_ARRAY,
    MARKER_CUBE,
    MARKER_DELETEALL,
    ODOMETRY,
    STORAGES,
    STRING,
    UINT8,
    WORLD_FRAME,
    typestore,
)
from pwm_model.data.schema import Boxes, DriveSample, EgoState
from pwm_model.errors import ConfigError, DataError
from pwm_model.geometry import (
    PinholeCamera,
    quat_from_yaw,
)

log = logging.getLogger(__name__)

class _MessageFactory:
    """Builds rosbags message objects of the ROS 2 Kilted definitions."""

    def __init__(self) -> None:
        self.store = typestore()
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
        out = [self._marker(t_ns, "", 0, MARKER_CUBE, MARKER_DELETEALL, self.pose(0, 0, 0, 0),
                            self.vector3(1, 1, 1), (0, 0, 0, 0))]
        arr = np.asarray(boxes.xyz_lwh_yaw, np.float64).reshape(-1, 7)
        for row, track_id, label in zip(arr, np.asarray(boxes.track_ids).reshape(-1), boxes.labels):
            hue = (zlib.crc32(str(label).encode()) % 360) / 360.0  # a stable colour per label (cosmetic)
            rgba = (0.5 + 0.5 * math.cos(2 * math.pi * hue), 0.5 + 0.5 * math.sin(2 * math.pi * hue), 0.6, 0.6)
            out.append(self._marker(t_ns, str(label), int(track_id), MARKER_CUBE, MARKER_ADD,
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
                storage: str = "mcap", encoding: str = "rgb8", camera_info: bool = True) -> Path:
    """Write a drive as a rosbag2 bag directory with the canonical topics; returns the bag path.

    Per camera frame: the image (raw ``encoding`` on ``topics.image``, or ``compressed_format`` on
    ``topics.compressed_image``), CameraInfo (unless ``camera_info`` is False), Odometry and the MarkerArray of
    boxes; the command on change and at least once a second; the scenario label on change. Stamps (header and
    receive time) are the sample stamps, which must increase. The bag is written to a temporary sibling and renamed
    at the end: a failure leaves nothing. An existing bag directory at ``path`` is replaced.
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
                "odom": w.add_connection(topics.odometry, ODOMETRY, typestore=f.store),
                "command": w.add_connection(topics.command, UINT8, typestore=f.store),
                "objects": w.add_connection(topics.objects, MARKER_ARRAY, typestore=f.store),
            }
            if camera_info:
                conns["info"] = w.add_connection(topics.camera_info, CAMERA_INFO, typestore=f.store)
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
                if camera_info:
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


