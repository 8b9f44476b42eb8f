"""Read rosbag2 drives (mcap or sqlite3) through ``rosbags``: find and resolve bags, then read one as a drive.

Header stamps define time; a zero header stamp falls back to the bag's receive time. Other topics are ignored
(the format: ``bag_format.py``; writing: ``bag_writer.py``).

    reader = DriveReader(path)
    print(reader.summary.describe())
    for sample in reader.samples(stride=2): ...

No torch and no ROS packages here (messages are parsed with the rosbags type store).
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import struct
import tempfile
import weakref
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from pwm_model.config import TopicsConfig
from pwm_model.data import images
from pwm_model.data.bag_format import (
    ACCEPTED_TYPES,
    COMMAND_WORDS,
    EGO_FRAME,
    MARKER_ADD,
    MARKER_CUBE,
    MARKER_MODIFY,
    WORLD_FRAME,
    normalise_msgtype,
    typestore,
)
from pwm_model.data.bag_tracks import BagSummary, BoxSets, Commands, EgoTrack, Labels, TopicSummary
from pwm_model.data.schema import Boxes, DriveSample
from pwm_model.errors import ConfigError, DataError, PwmError
from pwm_model.geometry import (
    from_ego_frame,
    wrap_angle,
    yaw_from_quat,
)

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------
# Reading

class UnreadableBagError(DataError):
    """The bag's storage cannot be read (corrupt or cut off), as opposed to a readable bag with unusable content."""


def is_bag_path(path: Path) -> bool:
    """A rosbag2 directory (with metadata.yaml) or a single .mcap / .db3 file."""
    return (path.is_dir() and (path / "metadata.yaml").is_file()) or (
        path.is_file() and path.suffix in (".mcap", ".db3"))


def find_bags(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Bags named by ``paths``: bag directories, .mcap / .db3 files, or directories searched recursively."""
    out: list[Path] = []
    for item in paths:
        p = Path(item)
        if not p.exists():
            raise DataError(f"bag path {p} does not exist")
        if is_bag_path(p):
            out.append(p)
        elif p.is_dir():
            found = _bags_under(p)
            if not found:
                raise DataError(f"no rosbag2 bags (directories with metadata.yaml, .mcap or .db3 files) under {p}")
            out += found
        else:
            raise DataError(f"{p} is not a rosbag2 bag: expected a bag directory or a .mcap or .db3 file")
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def _bags_under(root: Path) -> list[Path]:
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # skip hidden / unfinished outputs
        if "metadata.yaml" in filenames:
            found.append(here)
            dirnames.clear()
            continue
        found += [here / f for f in sorted(filenames) if f.endswith((".mcap", ".db3"))]
    return found


def resolve_bag(path: str | os.PathLike[str]) -> Path:
    """The one bag a path names: a bag directory, a .mcap / .db3 file, or a folder holding exactly one bag
    (searched as ``find_bags`` does: a recording folder whose metadata.yaml is missing, or `pwm gen-data`'s output)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"bag path {path} does not exist")
    if is_bag_path(path):
        return path
    if not path.is_dir():
        raise DataError(f"{path} is not a rosbag2 bag: expected a bag directory or a .mcap or .db3 file")
    found = _bags_under(path)
    if len(found) == 1:
        return found[0]
    if found:
        names = ", ".join(str(p) for p in found[:3]) + (", ..." if len(found) > 3 else "")
        raise DataError(f"{path} is not a rosbag2 bag: it has no metadata.yaml and holds {len(found)} bags or "
                        f"storage files ({names}): name the one to read")
    raise DataError(f"{path} is not a rosbag2 bag: it has no metadata.yaml and no .mcap or .db3 file")


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
        self._bag = resolve_bag(self.path)
        self._fallback_store = typestore()
        self.cut_off_note = ""  # set when a cut-off .mcap recording was read up to its cut
        self.last_receive_ns: int | None = None  # receive time of the camera frame ``frames`` yielded last
        try:
            with self._open("opening the bag") as reader:
                self._load(reader, require_camera)
        except UnreadableBagError:
            if not self._read_up_to_the_cut():
                raise
            with self._open("opening the bag read up to its cut") as reader:
                self._load(reader, require_camera)

    def _read_up_to_the_cut(self) -> bool:
        """Point the reader at a repaired copy of a cut-off single-file .mcap recording (True if there is one)."""
        from pwm_model.data.bag_recover import recover_mcap, storage_files

        files = storage_files(self._bag)
        if len(files) != 1:
            return False
        tmp = tempfile.mkdtemp(prefix="pwm-recovered-")
        weakref.finalize(self, shutil.rmtree, tmp, True)
        try:
            got = recover_mcap(files[0], Path(tmp) / files[0].name)
        except Exception:  # noqa: BLE001 - nothing whole to recover: the caller raises the one-sentence error
            return False
        self._bag = got.path
        self.cut_off_note = (f"{files[0]} is cut off (no summary or footer): read {got.messages} whole messages up to "
                             "the cut, the rest of the recording is lost")
        log.warning(self.cut_off_note)
        return True

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
            raise UnreadableBagError(f"bag {self.path} is corrupt or truncated ({_first_line(exc)}) while {what}") \
                from exc

    def _check_types(self, topic_types: dict[str, str]) -> None:
        for name, accepted in ACCEPTED_TYPES.items():
            topic = getattr(self.topics, name)
            have = topic_types.get(topic)
            if have is not None and have not in accepted:
                raise DataError(f"topic {topic} in {self.path} carries {have}, but pwm expects "
                                f"{' or '.join(accepted)} there")

    def _load(self, reader: Any, require_camera: bool) -> None:
        topic_types: dict[str, str] = {}
        summaries: dict[str, TopicSummary] = {}
        for name, info in reader.topics.items():
            msgtype = normalise_msgtype(info.msgtype or "")
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
        canonical = {name: getattr(tp, name) in topic_types for name in ACCEPTED_TYPES}
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
            value = COMMAND_WORDS.get(data.strip().lower())
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
            if int(m.type) != MARKER_CUBE or int(m.action) not in (MARKER_ADD, MARKER_MODIFY):
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
        ``decode`` is False, come with ``rgb = None`` and cost only their stamp. ``t_ns`` is the header stamp (the
        receive time where the header has none); ``last_receive_ns`` holds the bag's receive time of the frame
        just yielded (when it arrived at the recorder).
        """
        if not self._camera_topic:
            raise DataError(f"bag {self.path} has no camera topic {self.topics.image} or "
                            f"{self.topics.compressed_image}")
        with self._open(f"reading {self._camera_topic}") as reader:
            for i, (conn, receive_ns, raw) in enumerate(reader.messages(connections=self._camera_connections(reader))):
                self.last_receive_ns = int(receive_ns)
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
