"""Plans recorded from the live node (``pwm_replay --record`` or ``ros2 bag record``), read back for scoring.

A predictions bag holds the node's ``~/trajectory`` (nav_msgs/Path in ``base_link``, header stamp = the camera stamp
of the frame it was planned from, pose k stamped at ``t + k * waypoint_dt``), ``~/surprise`` (std_msgs/Float32,
published right after its trajectory) and ``/diagnostics``. The bag's receive time of a message is the ROS time at
which it arrived (``/clock`` during a replay), so receive time minus header stamp is the end-to-end latency.

No ROS packages here: messages are decoded with the ``rosbags`` type store.
"""

from __future__ import annotations

import contextlib
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.data.bag import is_bag_path
from pwm_model.errors import DataError
from pwm_model.geometry import yaw_from_quat

PATH = "nav_msgs/msg/Path"
FLOAT32 = "std_msgs/msg/Float32"
DIAGNOSTICS = "diagnostic_msgs/msg/DiagnosticArray"
TRAJECTORY_SUFFIX = "/trajectory"
LEVELS = ("OK", "WARN", "ERROR", "STALE")  # diagnostic_msgs/DiagnosticStatus levels 0..3
# the node's counters since it started (pwm_ros.diagnostics.COUNTERS; that package needs rclpy's neighbours, so the
# names are repeated here and a test keeps the two lists equal)
NODE_COUNTERS = ("frames_received", "frames_planned", "dropped_frames", "stale_frames", "future_frames",
                 "duplicate_frames", "bad_frames", "engine_errors", "nan_plans", "time_jumps", "bad_commands",
                 "bad_odometry", "qos_incompatible", "camera_type_mismatch", "previews_published", "cropped_frames")


@dataclass
class RecordedPlan:
    """One ``~/trajectory`` message."""

    t_ns: int  # header stamp: the camera stamp the plan was computed from
    receive_ns: int  # bag time at which it was recorded
    waypoints_xyyaw: np.ndarray  # (K, 3) float64 in base_link at t_ns
    waypoint_t_ns: np.ndarray  # (K,) int64
    surprise: float = math.nan


@dataclass
class RecordedPredictions:
    """Everything a predictions bag says about one run of the node."""

    path: Path
    topic: str
    plans: dict[int, RecordedPlan]  # by camera stamp (the last message wins for a repeated stamp)
    duplicates: int = 0  # trajectory messages whose stamp was already seen (a looped replay)
    diagnostics: dict[str, str] = field(default_factory=dict)  # key values of the last planner status
    diagnostics_run: dict[str, Any] = field(default_factory=dict)  # every planner status summed up (diagnostics_run)

    @property
    def waypoint_dt_s(self) -> float:
        """Waypoint spacing from the stamps (NaN when unknown)."""
        for p in self.plans.values():
            if len(p.waypoint_t_ns):
                k = np.arange(1, len(p.waypoint_t_ns) + 1)
                dt = (p.waypoint_t_ns - p.t_ns) / k
                if np.all(dt > 0):
                    return float(np.median(dt)) / 1e9
        return math.nan


def _reader(path: Path) -> Any:
    from rosbags.highlevel import AnyReader
    from rosbags.typesys import Stores, get_typestore

    # the ROS 2 Kilted definitions, for bags that do not carry their own message definitions
    return AnyReader([path], default_typestore=get_typestore(Stores.ROS2_KILTED))


@contextlib.contextmanager
def _open(path: Path) -> Iterator[Any]:
    if not path.exists():
        raise DataError(f"predictions bag {path} does not exist")
    if not is_bag_path(path):
        raise DataError(f"predictions {path} is not a rosbag2 bag: expected a bag directory with metadata.yaml or a "
                        ".mcap or .db3 file")
    try:
        with _reader(path) as reader:
            yield reader
    except DataError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0].rstrip(".")
        raise DataError(f"predictions bag {path} is corrupt or truncated ({first})") from exc


def _pick_topic(reader: Any, path: Path, topic: str | None) -> str:
    paths = sorted(c.topic for c in reader.connections if c.msgtype == PATH)
    if topic:
        if topic not in paths:
            raise DataError(f"predictions bag {path} has no nav_msgs/Path topic {topic}; it has "
                            f"{', '.join(paths) or 'none'}")
        return topic
    candidates = [t for t in paths if t.endswith(TRAJECTORY_SUFFIX)] or paths
    if not candidates:
        listing = ", ".join(sorted({f"{c.topic} ({c.msgtype})" for c in reader.connections})) or "no topics"
        raise DataError(f"predictions bag {path} holds no planned trajectory (nav_msgs/Path); it has {listing}")
    if len(set(candidates)) > 1:
        raise DataError(f"predictions bag {path} has several trajectory topics ({', '.join(candidates)}): "
                        "choose one with --prediction-topic")
    return candidates[0]


def read_predictions(path: str | os.PathLike[str], topic: str | None = None) -> RecordedPredictions:
    """Read the plans (and their surprise and the node's last diagnostics) from a predictions bag.

    ``topic``: the nav_msgs/Path topic; by default the one topic ending in ``/trajectory``. Surprise comes from the
    Float32 topic beside it (``<node>/surprise``) and is attached to the trajectory recorded just before it.
    """
    path = Path(path)
    with _open(path) as reader:
        traj_topic = _pick_topic(reader, path, topic)
        surprise_topic = traj_topic[: -len(TRAJECTORY_SUFFIX)] + "/surprise" \
            if traj_topic.endswith(TRAJECTORY_SUFFIX) else None
        conns = [c for c in reader.connections if c.topic == traj_topic or (
            c.topic == surprise_topic and c.msgtype == FLOAT32) or c.msgtype == DIAGNOSTICS]
        plans: dict[int, RecordedPlan] = {}
        duplicates, last, diagnostics = 0, None, {}
        statuses: list[tuple[int, int, str, dict[str, str]]] = []  # (receive ns, level, message, values)
        for i, (conn, receive_ns, raw) in enumerate(reader.messages(connections=conns)):
            try:
                msg = reader.deserialize(raw, conn.msgtype)
            except Exception as exc:
                raise DataError(f"predictions bag {path} has a corrupt {conn.msgtype} message on {conn.topic} "
                                f"(message {i})") from exc
            if conn.topic == traj_topic:
                last = _plan_from_path(msg, int(receive_ns))
                if len(last.waypoints_xyyaw) == 0:
                    continue
                duplicates += last.t_ns in plans
                plans[last.t_ns] = last
            elif conn.msgtype == FLOAT32:
                if last is not None and math.isnan(last.surprise):
                    last.surprise = float(msg.data)
            else:
                for status in msg.status:
                    if status.name.endswith("planner"):
                        diagnostics = {kv.key: kv.value for kv in status.values}
                        statuses.append((int(receive_ns), _level(status.level), str(status.message), diagnostics))
    if not plans:
        raise DataError(f"predictions bag {path} has no planned trajectory on {traj_topic}: was the node active "
                        "while the drive was replayed?")
    return RecordedPredictions(path, traj_topic, plans, duplicates, diagnostics, diagnostics_run(statuses))


def _level(value: Any) -> int:
    """A DiagnosticStatus level as an int (rosbags gives an int for ``byte``, rclpy gives ``bytes``)."""
    if isinstance(value, (bytes, bytearray)):
        return int(value[0]) if value else 0
    return int(value)


def _level_name(level: int) -> str:
    return LEVELS[level] if 0 <= level < len(LEVELS) else str(level)


def problem_kind(text: str) -> str:
    """One problem of a diagnostics message with its numbers replaced (``pwm_ros.diagnostics.fault_kind``'s rule),
    so that "12 frames older than ..." and "3 frames older than ..." are one kind."""
    return re.sub(r"[0-9]+(?:[.][0-9]+)?", "#", text.strip())


def _number(text: str | None) -> float:
    try:
        return float(text) if text is not None else math.nan
    except ValueError:
        return math.nan


def diagnostics_run(statuses: list[tuple[int, int, str, dict[str, str]]]) -> dict[str, Any]:
    """The node's planner statuses over a run, as recorded: how many at each level, how many named each problem
    (a WARN / ERROR message lists its problems joined by "; "), the final level and message, the node's counters
    from the last status and the median input / plan rate the node measured while frames came. {} without any."""
    if not statuses:
        return {}
    levels = dict.fromkeys(LEVELS, 0)
    problems: dict[str, int] = {}
    for _, level, message, _ in statuses:
        levels[_level_name(level)] = levels.get(_level_name(level), 0) + 1
        if level > 0:
            for part in message.split("; "):
                if part.strip():
                    kind = problem_kind(part)
                    problems[kind] = problems.get(kind, 0) + 1
    t_last, level_last, message_last, values_last = statuses[-1]
    counters = {}
    for name in NODE_COUNTERS:
        v = _number(values_last.get(name))
        if math.isfinite(v):
            counters[name] = int(v)
    rates = {}
    for key in ("input_rate_hz", "plan_rate_hz"):
        flowing = [v for v in (_number(vals.get(key)) for _, _, _, vals in statuses) if math.isfinite(v) and v > 0]
        rates[f"{key.removesuffix('_hz')}_p50_hz"] = float(np.median(flowing)) if flowing else None
    return {"messages": len(statuses), "levels": levels,
            "problems": dict(sorted(problems.items(), key=lambda kv: (-kv[1], kv[0]))),
            "final_level": _level_name(level_last),
            "final_message": message_last, "counters": counters, "last_fault": values_last.get("last_fault") or None,
            "span_s": round((t_last - statuses[0][0]) / 1e9, 3), **rates}


def _stamp_ns(stamp: Any) -> int:
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _plan_from_path(msg: Any, receive_ns: int) -> RecordedPlan:
    k = len(msg.poses)
    xyyaw = np.zeros((k, 3))
    wp_t = np.zeros(k, np.int64)
    for j, ps in enumerate(msg.poses):
        p, q = ps.pose.position, ps.pose.orientation
        xyyaw[j] = (p.x, p.y, yaw_from_quat(q.x, q.y, q.z, q.w))
        wp_t[j] = _stamp_ns(ps.header.stamp)
    if not np.all(np.isfinite(xyyaw)):
        raise DataError(f"a recorded trajectory stamped {_stamp_ns(msg.header.stamp)} ns holds NaN or infinite "
                        "waypoints")
    return RecordedPlan(_stamp_ns(msg.header.stamp), receive_ns, xyyaw, wp_t)
