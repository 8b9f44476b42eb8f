"""A pure-Python Cyclone DDS reader of ``nav_msgs/msg/Path``: the other vendor's side of test_cyclone_interop.py.

    python test/cyclone_path_reader.py TOPIC SECONDS     # CYCLONEDDS_URI and ROS_DOMAIN_ID from the environment

Prints one JSON line per event to stdout: ``{"ready": ...}`` once its reader exists, ``{"matched": n}`` whenever
the number of matched writers changes, ``{"path": {...}}`` for every sample; exits after SECONDS. No rclpy here:
the types are IDL structs written out by hand with the names ROS 2 gives them on the wire
(``<package>::msg::dds_::<Type>_``, topic ``rt/<name>``), so nothing but the ``cyclonedds`` package is needed.
"""

# No `from __future__ import annotations`: cyclonedds reads the field types from real annotation objects.
import json
import os
import sys
import time
from dataclasses import dataclass

from cyclonedds.core import Policy, Qos
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import IdlStruct
from cyclonedds.idl.types import float64, int32, sequence, uint32
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration


@dataclass
class Time(IdlStruct, typename="builtin_interfaces::msg::dds_::Time_"):
    sec: int32
    nanosec: uint32


@dataclass
class Header(IdlStruct, typename="std_msgs::msg::dds_::Header_"):
    stamp: Time
    frame_id: str


@dataclass
class Point(IdlStruct, typename="geometry_msgs::msg::dds_::Point_"):
    x: float64
    y: float64
    z: float64


@dataclass
class Quaternion(IdlStruct, typename="geometry_msgs::msg::dds_::Quaternion_"):
    x: float64
    y: float64
    z: float64
    w: float64


@dataclass
class Pose(IdlStruct, typename="geometry_msgs::msg::dds_::Pose_"):
    position: Point
    orientation: Quaternion


@dataclass
class PoseStamped(IdlStruct, typename="geometry_msgs::msg::dds_::PoseStamped_"):
    header: Header
    pose: Pose


@dataclass
class Path(IdlStruct, typename="nav_msgs::msg::dds_::Path_"):
    header: Header
    poses: sequence[PoseStamped]


# What pwm_node's ~/trajectory offers: reliable, volatile, keep last 10.
READER_QOS = Qos(Policy.Reliability.Reliable(duration(seconds=1)), Policy.Durability.Volatile,
                 Policy.History.KeepLast(10))


def _ns(t: Time) -> int:
    return t.sec * 1_000_000_000 + t.nanosec


def _say(**event: object) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def main(argv: list[str]) -> int:
    topic_name, seconds = argv[0], float(argv[1])
    dp = DomainParticipant(int(os.environ.get("ROS_DOMAIN_ID", "0")))
    reader = DataReader(dp, Topic(dp, "rt/" + topic_name.lstrip("/"), Path), qos=READER_QOS)
    _say(ready=os.environ.get("CYCLONEDDS_URI", ""))
    matched = -1
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        n = len(reader.get_matched_publications())
        if n != matched:
            matched = n
            _say(matched=n)
        for msg in reader.take(N=10):
            if not isinstance(msg, Path):  # an InvalidSample: the writer went away (dispose / unregister)
                continue
            first = msg.poses[0].pose if msg.poses else None
            _say(path={"stamp_ns": _ns(msg.header.stamp), "frame_id": msg.header.frame_id, "n_poses": len(msg.poses),
                       "pose_stamps_ns": [_ns(p.header.stamp) for p in msg.poses],
                       "xyz": [[p.pose.position.x, p.pose.position.y, p.pose.position.z] for p in msg.poses],
                       "first_xyz": [first.position.x, first.position.y, first.position.z] if first else None,
                       "first_q": [first.orientation.x, first.orientation.y, first.orientation.z,
                                   first.orientation.w] if first else None})
        time.sleep(0.02)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
