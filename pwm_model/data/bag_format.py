"""The rosbag2 drive format shared by the writer and the reader: message types, frames, topics and the type store.

Canonical topics (names from ``TopicsConfig``): sensor_msgs/Image or CompressedImage (front camera),
sensor_msgs/CameraInfo, nav_msgs/Odometry (``odom`` -> ``base_link``), std_msgs/UInt8 route command,
visualization_msgs/MarkerArray of CUBE boxes (ns = label, id = track id, scale = l/w/h) and std_msgs/String scenario
label. No torch and no ROS packages (messages are built and parsed with the rosbags type store).
"""

from __future__ import annotations

import functools
from typing import Any

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
MARKER_CUBE, MARKER_ADD, MARKER_MODIFY, MARKER_DELETEALL = 1, 0, 0, 3
COMMAND_WORDS = {"left": 0, "straight": 1, "right": 2}

# canonical TopicsConfig field -> message types accepted there
ACCEPTED_TYPES: dict[str, tuple[str, ...]] = {
    "image": (IMAGE,),
    "compressed_image": (COMPRESSED_IMAGE,),
    "camera_info": (CAMERA_INFO,),
    "odometry": (ODOMETRY,),
    "command": (UINT8, STRING),
    "objects": (MARKER_ARRAY,),
    "scenario": (STRING,),
}


@functools.lru_cache(maxsize=1)
def typestore() -> Any:
    """The ROS 2 Kilted message definitions (shared; loading them takes a fraction of a second)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED)


def normalise_msgtype(name: str) -> str:
    """``pkg/Type`` and ``pkg/msg/Type`` both -> ``pkg/msg/Type``."""
    parts = str(name).strip("/").split("/")
    return f"{parts[0]}/msg/{parts[1]}" if len(parts) == 2 else "/".join(parts)




def camera_topics(topic: str, flag: str = "--camera-topic") -> dict[str, str]:
    """The ``TopicsConfig`` camera fields one camera topic stands for, named as the node's ``camera_topic`` is
    (image_transport): raw Image on TOPIC, CompressedImage on TOPIC/compressed; a TOPIC ending in /compressed is
    the compressed one and its base the raw one (a bag with both is read from the raw topic)."""
    from pwm_model.errors import ConfigError

    name = str(topic).strip()
    name = name.rstrip("/") if name != "/" else name
    base = name[: -len("/compressed")] if name.endswith("/compressed") else name
    if not base.startswith("/") or base == "/" or " " in base:
        raise ConfigError(f"{flag} {topic!r} must be an absolute topic name such as /camera/front/image_raw")
    return {"image": base, "compressed_image": f"{base}/compressed"}
