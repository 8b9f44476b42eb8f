"""``pwm_replay``: play a rosbag2 bag over ROS 2 with ``/clock``, and record the planner's outputs into a new bag.

    pwm_replay out/sample_drive --rate 1.0 --record out/predictions
    pwm_node --ros-args -p use_sim_time:=true -p model_dir:=out/models/pwm-tiny-onnx -p autostart:=true  # 2nd shell

Every topic of the bag is published as stored (CDR bytes, no re-encoding) with the QoS a sensor driver uses
(REP-2003: reliable, volatile, keep last), while ``/clock`` carries the bag time; ``--loop`` starts again from the
beginning (time jumps back and the node resets its history). ``--record`` writes the node's outputs (every
``~/trajectory`` Path with its header stamp, ``~/surprise``, ``/diagnostics`` ...) to a rosbag2 bag with the
``rosbags`` library, stamped with the bag time at which they arrived; ``pwm eval-bag BAG --predictions OUT_BAG``
scores them. In a full ROS install ``ros2 bag play --clock`` and ``ros2 bag record`` do the same (docs/ROBOT.md).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from pwm_model.data.bag import resolve_bag
from pwm_model.data.bag_format import BAG_VERSION, STORAGES
from pwm_model.errors import DataError, PwmError
from pwm_model.io_utils import atomic_path

log = logging.getLogger("pwm_replay")

CLOCK_TOPIC = "/clock"
DEFAULT_NODE = "/pwm_node"
DEFAULT_OUTPUTS = ("trajectory", "surprise")  # under the node's name; /diagnostics is added


def message_class(msgtype: str) -> Any:
    """The rclpy message class of ``pkg/msg/Type`` (or ``pkg/Type``); ``None`` if its package is not installed."""
    parts = msgtype.strip("/").split("/")
    pkg, name = parts[0], parts[-1]
    try:
        return getattr(importlib.import_module(f"{pkg}.msg"), name)
    except (ImportError, AttributeError):
        return None


def _open_bag(path: Path) -> Any:
    """An open rosbags ``AnyReader`` of a rosbag2 bag; one ``DataError`` sentence for anything unusable."""
    from rosbags.highlevel import AnyReader

    path = resolve_bag(path)
    try:
        reader = AnyReader([path])
        reader.open()
    except Exception as exc:
        raise DataError(f"bag {path} cannot be read: {str(exc).splitlines()[0] if str(exc) else exc!r}") from exc
    if not getattr(reader, "is2", True):
        reader.close()
        raise DataError(f"{path} is a ROS 1 bag: convert it first (`rosbags-convert --src {path}`)")
    return reader


class Player:
    """Publishes a bag's messages at their recorded pace (times ``rate``) together with ``/clock``."""

    def __init__(self, node: Any, bag: str | os.PathLike[str], *, rate: float = 1.0, loop: bool = False,
                 topics: list[str] | None = None, clock_hz: float = 100.0) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
        from rosgraph_msgs.msg import Clock

        if not rate > 0:
            raise DataError(f"--rate must be positive, got {rate}")
        self.node, self.path, self.rate, self.loop = node, resolve_bag(Path(bag)), float(rate), loop
        self.clock_period_s = 1.0 / clock_hz
        self._stop = threading.Event()
        self.now_ns: int | None = None  # the bag time last published on /clock
        self.published = 0
        self.loops = 0
        self._clock_msg = Clock
        with contextlib.closing(_open_bag(self.path)) as reader:
            conns = [c for c in reader.connections if topics is None or c.topic in topics]
            self.start_ns, self.end_ns = reader.start_time, reader.end_time
            self.message_count = sum(c.msgcount for c in conns)
        if topics is not None:
            missing = sorted(set(topics) - {c.topic for c in conns})
            if missing:
                raise DataError(f"bag {self.path} has no topic {', '.join(missing)}")
        self.topic_types: dict[str, str] = {}
        self._pubs: dict[str, Any] = {}
        for c in conns:
            if c.topic in self._pubs:
                continue
            cls = message_class(c.msgtype)
            if cls is None:
                log.warning("skipping %s: message type %s is not installed here", c.topic, c.msgtype)
                continue
            latched = "transient_local" in repr(getattr(c.ext, "offered_qos_profiles", "")).lower()
            qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            self._pubs[c.topic] = node.create_publisher(cls, c.topic, qos)
            self.topic_types[c.topic] = c.msgtype
        if not self._pubs:
            raise DataError(f"bag {self.path} has no topic that can be published here")
        # rclpy's /clock subscription is best effort; a reliable publisher serves both kinds of subscriber.
        self._clock_pub = node.create_publisher(Clock, CLOCK_TOPIC, QoSProfile(
            depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE))

    def stop(self) -> None:
        self._stop.set()

    def subscriber_count(self) -> int:
        return sum(p.get_subscription_count() for p in self._pubs.values())

    def wait_for_subscribers(self, timeout_s: float) -> bool:
        """Wait until some topic of the bag has a subscriber (e.g. the node became active)."""
        deadline = time.monotonic() + timeout_s
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.subscriber_count():
                return True
            time.sleep(0.05)
        return bool(self.subscriber_count())

    def publish_clock(self, t_ns: int) -> None:
        from builtin_interfaces.msg import Time

        self.now_ns = int(t_ns)
        sec, nanosec = divmod(int(t_ns), 1_000_000_000)
        self._clock_pub.publish(self._clock_msg(clock=Time(sec=sec, nanosec=nanosec)))

    def _messages(self) -> Iterator[tuple[str, int, bytes]]:
        with contextlib.closing(_open_bag(self.path)) as reader:
            conns = [c for c in reader.connections if c.topic in self._pubs]
            for conn, t_ns, raw in reader.messages(connections=conns):
                yield conn.topic, int(t_ns), bytes(raw)

    def _sleep_until(self, wall_s: float, bag_t0_ns: int, wall_t0_s: float) -> None:
        """Sleep until ``wall_s``, publishing /clock at the clock rate meanwhile."""
        while not self._stop.is_set():
            left = wall_s - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, self.clock_period_s))
            elapsed_s = min(time.monotonic(), wall_s) - wall_t0_s
            self.publish_clock(bag_t0_ns + int(elapsed_s * self.rate * 1e9))

    def play(self) -> int:
        """Play once (or until stopped with ``loop``); returns the number of messages published."""
        while not self._stop.is_set():
            wall_t0, bag_t0 = time.monotonic(), None
            for topic, t_ns, raw in self._messages():
                if self._stop.is_set():
                    break
                if bag_t0 is None:
                    bag_t0 = t_ns
                    self.publish_clock(t_ns)
                self._sleep_until(wall_t0 + (t_ns - bag_t0) / 1e9 / self.rate, bag_t0, wall_t0)
                if self._stop.is_set():
                    break
                if self.now_ns != t_ns:
                    self.publish_clock(t_ns)
                self._pubs[topic].publish(raw)
                self.published += 1
            self.loops += 1
            if not self.loop:
                break
        return self.published


class Recorder:
    """Records topics (raw CDR, as received) into a rosbag2 bag written with ``rosbags``.

    Topics are subscribed as soon as they appear in the ROS graph (their type and QoS are taken from the
    publishers, as ``ros2 bag record`` does). The bag is written under a temporary name and renamed on ``close``.
    """

    def __init__(self, node: Any, out: str | os.PathLike[str], topics: list[str], now_ns: Callable[[], int], *,
                 storage: str = "mcap") -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        if storage not in STORAGES:
            raise DataError(f"bag storage {storage!r} is not supported: use {' or '.join(STORAGES)}")
        self.node, self.out, self.topics, self._now_ns = node, Path(out), list(topics), now_ns
        if self.out.exists() and not (self.out.is_dir() and (self.out / "metadata.yaml").is_file()):
            raise DataError(f"refusing to overwrite {self.out}: it exists and is not a rosbag2 bag")
        self._store = get_typestore(Stores.ROS2_KILTED)  # the definitions pwm_model.data.bag writes too
        self._lock = threading.Lock()
        self._stack = contextlib.ExitStack()
        tmp = self._stack.enter_context(atomic_path(self.out, is_dir=True))
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self._writer = Writer(tmp, version=BAG_VERSION, storage_plugin=plugin)
        self._writer.open()
        self._conns: dict[str, Any] = {}
        self._subs: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.last_message_s = time.monotonic()
        self._closed = False
        self._timer = node.create_timer(0.1, self._discover)

    def _discover(self) -> None:
        from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy

        known = dict(self.node.get_topic_names_and_types())
        for topic in self.topics:
            if topic in self._subs or topic not in known:
                continue
            infos = self.node.get_publishers_info_by_topic(topic)
            if not infos:
                continue
            msgtype = known[topic][0]
            cls = message_class(msgtype)
            if cls is None or msgtype not in self._store.types:
                log.warning("not recording %s: message type %s is unknown here", topic, msgtype)
                self._subs[topic] = None
                continue
            reliable = all(i.qos_profile.reliability == ReliabilityPolicy.RELIABLE for i in infos)
            latched = all(i.qos_profile.durability == DurabilityPolicy.TRANSIENT_LOCAL for i in infos)
            qos = QoSProfile(depth=100,
                             reliability=ReliabilityPolicy.RELIABLE if reliable else ReliabilityPolicy.BEST_EFFORT,
                             durability=DurabilityPolicy.TRANSIENT_LOCAL if latched else DurabilityPolicy.VOLATILE)
            with self._lock:
                if self._closed:
                    return
                self._conns[topic] = self._writer.add_connection(topic, msgtype, typestore=self._store)
                self.counts[topic] = 0
            self._subs[topic] = self.node.create_subscription(
                cls, topic, lambda raw, t=topic: self._write(t, raw), qos, raw=True)
            log.info("recording %s (%s)", topic, msgtype)

    def _write(self, topic: str, raw: bytes) -> None:
        with self._lock:
            if self._closed:
                return
            self._writer.write(self._conns[topic], int(self._now_ns()), bytes(raw))
            self.counts[topic] += 1
            self.last_message_s = time.monotonic()

    @property
    def subscribed(self) -> list[str]:
        return [t for t, s in self._subs.items() if s is not None]

    def close(self, keep: bool = True) -> Path | None:
        """Stop recording; with ``keep`` the bag is renamed to its final path (returned), else discarded."""
        with self._lock:
            if self._closed:
                return self.out if keep else None
            self._closed = True
        self._timer.cancel()
        self.node.destroy_timer(self._timer)
        for sub in self._subs.values():
            if sub is not None:
                self.node.destroy_subscription(sub)
        self._writer.close()
        if keep:
            self._stack.close()
            return self.out
        self._stack.__exit__(DataError, DataError("recording discarded"), None)
        return None


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pwm_replay", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Run the node with use_sim_time:=true so that it follows the bag's /clock.")
    p.add_argument("bag", help="rosbag2 bag (directory with metadata.yaml, or a .mcap / .db3 file)")
    p.add_argument("--rate", type=float, default=1.0, help="playback speed factor (default 1.0)")
    p.add_argument("--loop", action="store_true", help="play again from the start until interrupted")
    p.add_argument("--record", metavar="OUT_BAG", help="record the node's outputs into this rosbag2 bag")
    p.add_argument("--node", default=DEFAULT_NODE, help=f"the planner's node name (default {DEFAULT_NODE})")
    p.add_argument("--record-topic", dest="record_topics", action="append", default=None, metavar="TOPIC",
                   help="topic to record (repeatable); default: <node>/trajectory, <node>/surprise, /diagnostics")
    p.add_argument("--topic", dest="topics", action="append", default=None, metavar="TOPIC",
                   help="play only this topic of the bag (repeatable; default: all)")
    p.add_argument("--storage", choices=STORAGES, default="mcap", help="storage of the recorded bag (default mcap)")
    p.add_argument("--clock-hz", type=float, default=100.0, help="/clock publishing rate between messages")
    p.add_argument("--wait-s", type=float, default=30.0,
                   help="wait this long for a subscriber to the bag's topics before playing (default 30)")
    p.add_argument("--drain-s", type=float, default=2.0,
                   help="after the bag ends, record until no output arrived for this long (default 2)")
    return p


def default_record_topics(node_name: str) -> list[str]:
    base = "/" + node_name.strip("/")
    return [f"{base}/{name}" for name in DEFAULT_OUTPUTS] + ["/diagnostics"]


def run(args: argparse.Namespace) -> int:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    node = rclpy.create_node("pwm_replay")
    executor = SingleThreadedExecutor()
    executor.add_node(node)
    spinner = threading.Thread(target=executor.spin, name="pwm_replay-spin", daemon=True)
    recorder: Recorder | None = None
    player = Player(node, args.bag, rate=args.rate, loop=args.loop, topics=args.topics, clock_hz=args.clock_hz)
    keep = False
    try:
        if args.record:
            recorder = Recorder(node, args.record, args.record_topics or default_record_topics(args.node),
                                lambda: player.now_ns or player.start_ns, storage=args.storage)
        spinner.start()
        print(f"pwm_replay: {player.message_count} messages on {len(player.topic_types)} topics, "
              f"{(player.end_ns - player.start_ns) / 1e9:.1f} s at rate {args.rate:g}"
              + (", looping" if args.loop else ""), flush=True)
        if not player.wait_for_subscribers(args.wait_s):
            print(f"pwm_replay: no subscriber after {args.wait_s:g} s; playing anyway", flush=True)
        try:
            player.play()
        except KeyboardInterrupt:
            player.stop()
        if recorder is not None:
            deadline = time.monotonic() + max(10.0, 3 * args.drain_s)
            while time.monotonic() < deadline and time.monotonic() - recorder.last_message_s < args.drain_s:
                time.sleep(0.05)
        keep = True
    finally:
        if recorder is not None:
            out = recorder.close(keep=keep)
            if out is not None:
                counts = ", ".join(f"{t} {n}" for t, n in recorder.counts.items()) or "nothing"
                print(f"pwm_replay: recorded {counts} into {out}", flush=True)
        executor.shutdown()
        if spinner.is_alive():
            spinner.join(timeout=5.0)  # let the spin thread leave before the context goes away
        node.destroy_node()
    print(f"pwm_replay: published {player.published} messages", flush=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``pwm_replay``: the console script."""
    import rclpy

    argv = sys.argv[1:] if argv is None else argv
    ros_args = argv[argv.index("--ros-args"):] if "--ros-args" in argv else []
    args = build_parser().parse_args(argv[: len(argv) - len(ros_args)])
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    rclpy.init(args=["pwm_replay", *ros_args])
    try:
        return run(args)
    except PwmError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    finally:
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
