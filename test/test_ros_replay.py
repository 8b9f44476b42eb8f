"""Live bag replay with /clock and the recorder of the node's outputs, over real DDS with real rosbag2 files."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -e .[ros])")

from nav_msgs.msg import Path as PathMsg  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402

from pwm_model.config import CameraConfig, TopicsConfig  # noqa: E402
from pwm_model.data.bag_writer import write_drive  # noqa: E402
from pwm_model.data.schema import Boxes, DriveSample, EgoState  # noqa: E402
from pwm_model.errors import DataError  # noqa: E402
from pwm_model.runtime.types import Plan  # noqa: E402
from pwm_ros import conversions  # noqa: E402
from pwm_ros.replay import Player, Recorder  # noqa: E402

from .conftest import BIN_DIR  # noqa: E402
from .ros_utils import Probe, spinning, wait_for  # noqa: E402

T0_NS = 1_000_000_000_000
DT_NS = 100_000_000
CAMERA = CameraConfig(width_px=32, height_px=16)
KEEP_ALL = QoSProfile(depth=10_000, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


def _frames(n: int) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.integers(0, 255, (CAMERA.height_px, CAMERA.width_px, 3), dtype=np.uint8) for _ in range(n)]


@pytest.fixture
def drive_bag(tmp_path: Path) -> tuple[Path, list[np.ndarray]]:
    frames = _frames(8)
    samples = [DriveSample(t_ns=T0_NS + k * DT_NS, image_rgb=f, ego=EgoState(T0_NS + k * DT_NS, 2.0 * k, 0.0, 0.0,
                                                                             speed_mps=20.0),
                           command=1, boxes=Boxes()) for k, f in enumerate(frames)]
    return write_drive(tmp_path / "drive", samples, CAMERA, TopicsConfig()), frames


def test_player_publishes_every_frame_with_clock(drive_bag: tuple[Path, list[np.ndarray]]) -> None:
    bag, frames = drive_bag
    with spinning(lambda: Node("replayer"), Probe) as (_, (replayer, probe)):
        # reliable and deep, so that a slow test executor loses nothing (the node's best-effort subscription is
        # tested in test_ros_node.py)
        images = probe.listen(Image, "/camera/front/image_raw", KEEP_ALL)
        clock = probe.listen(Clock, "/clock", KEEP_ALL)
        player = Player(replayer, bag, rate=4.0)
        assert player.topic_types["/camera/front/image_raw"] == "sensor_msgs/msg/Image"
        assert player.wait_for_subscribers(10.0)
        wait_for(lambda: replayer.count_subscribers("/clock") > 0, 5.0)
        assert player.play() == player.message_count
        assert wait_for(lambda: len(images) == len(frames), 10.0), f"{len(images)} of {len(frames)} frames arrived"
        last_ns = T0_NS + (len(frames) - 1) * DT_NS
        assert wait_for(lambda: clock and conversions.stamp_to_ns(clock[-1].clock) == last_ns, 10.0)
    stamps = [conversions.stamp_to_ns(m.header.stamp) for m in images]
    assert stamps == [T0_NS + k * DT_NS for k in range(len(frames))]
    for msg, rgb in zip(images, frames):
        np.testing.assert_array_equal(conversions.image_to_rgb(msg), rgb)  # bytes as stored, no re-encoding
    clock_ns = [conversions.stamp_to_ns(c.clock) for c in clock]
    assert clock_ns == sorted(clock_ns) and clock_ns[0] >= T0_NS and clock_ns[-1] == stamps[-1]


def test_player_loops_and_time_jumps_back(drive_bag: tuple[Path, list[np.ndarray]]) -> None:
    bag, frames = drive_bag
    with spinning(lambda: Node("replayer"), Probe) as (_, (replayer, probe)):
        clock = probe.listen(Clock, "/clock", KEEP_ALL)
        player = Player(replayer, bag, rate=8.0, loop=True, topics=["/camera/front/image_raw"])
        wait_for(lambda: replayer.count_subscribers("/clock") > 0, 5.0)
        thread = threading.Thread(target=player.play)
        thread.start()
        def jumped_back() -> bool:
            ns = [conversions.stamp_to_ns(c.clock) for c in list(clock)]
            return any(b < a for a, b in zip(ns, ns[1:]))

        try:
            assert wait_for(lambda: player.loops >= 2, 20.0)
            # the second loop has begun; its first /clock may still be on its way here
            assert wait_for(jumped_back, 10.0), "a loop must take /clock back to the start"
        finally:
            player.stop()
            thread.join(10.0)
        assert player.published >= 2 * len(frames)


def test_player_rejects_what_it_cannot_play(tmp_path: Path, drive_bag: tuple[Path, list[np.ndarray]]) -> None:
    bag, _ = drive_bag
    with spinning(lambda: Node("replayer")) as (_, (replayer,)):
        with pytest.raises(DataError, match="does not exist"):
            Player(replayer, tmp_path / "missing")
        (tmp_path / "not_a_bag").mkdir()
        with pytest.raises(DataError, match="not a rosbag2 bag"):
            Player(replayer, tmp_path / "not_a_bag")
        with pytest.raises(DataError, match="no topic /nope"):
            Player(replayer, bag, topics=["/nope"])
        assert Player(replayer, bag.parent).path == bag  # a folder holding one bag, as `pwm gen-data` writes
        shutil.copytree(bag, bag.parent / "second")
        with pytest.raises(DataError, match="holds 2 bags"):
            Player(replayer, bag.parent)
        with pytest.raises(DataError, match="rate"):
            Player(replayer, bag, rate=0.0)


def _plan(k: int) -> Plan:
    t_ns = T0_NS + k * DT_NS
    wp = np.array([[1.0 + k, 0.1 * k, 0.01 * k], [2.0 + k, 0.2 * k, 0.02 * k]], np.float32)
    return Plan(t_ns=t_ns, waypoints_xyyaw=wp, waypoint_t_ns=t_ns + np.array([500_000_000, 1_000_000_000]),
                forecast_tokens=np.zeros((0, 4), np.int64))


def test_recorder_keeps_every_path_with_its_header_stamp(tmp_path: Path) -> None:
    from rosbags.highlevel import AnyReader

    out = tmp_path / "predictions"
    now = [T0_NS]
    with spinning(lambda: Node("pwm_node"), lambda: Node("recorder")) as (_, (planner, rec_node)):
        traj = planner.create_publisher(PathMsg, "~/trajectory", 10)
        surprise = planner.create_publisher(Float32, "~/surprise", 10)
        recorder = Recorder(rec_node, out, ["/pwm_node/trajectory", "/pwm_node/surprise", "/absent"],
                            lambda: now[0])
        assert wait_for(lambda: len(recorder.subscribed) == 2, 10.0), recorder.subscribed
        wait_for(lambda: traj.get_subscription_count() and surprise.get_subscription_count(), 5.0)
        for k in range(6):
            now[0] = T0_NS + k * DT_NS + 30_000_000  # arrival 30 ms after the camera stamp (bag time)
            traj.publish(conversions.plan_to_path(_plan(k), "base_link"))
            surprise.publish(Float32(data=0.5 * k))
            wait_for(lambda k=k: recorder.counts["/pwm_node/trajectory"] == k + 1, 5.0)
        assert wait_for(lambda: recorder.counts == {"/pwm_node/trajectory": 6, "/pwm_node/surprise": 6}, 10.0)
        assert not out.exists()  # written under a temporary name until closed
        assert recorder.close() == out
    with AnyReader([out]) as reader:
        paths = [(t, reader.deserialize(raw, c.msgtype)) for c, t, raw in reader.messages()
                 if c.topic == "/pwm_node/trajectory"]
        topics = {c.topic: c.msgtype for c in reader.connections}
    assert topics == {"/pwm_node/trajectory": "nav_msgs/msg/Path", "/pwm_node/surprise": "std_msgs/msg/Float32"}
    assert [t for t, _ in paths] == [T0_NS + k * DT_NS + 30_000_000 for k in range(6)]
    for k, (_, msg) in enumerate(paths):
        assert msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec == T0_NS + k * DT_NS
        assert msg.header.frame_id == "base_link"
        assert msg.poses[1].pose.position.x == pytest.approx(2.0 + k)


def test_recorder_discard_and_refusal(tmp_path: Path) -> None:
    (tmp_path / "precious").mkdir()
    (tmp_path / "precious" / "notes.txt").write_text("keep me")
    with spinning(lambda: Node("recorder")) as (_, (rec_node,)):
        with pytest.raises(DataError, match="refusing to overwrite"):
            Recorder(rec_node, tmp_path / "precious", ["/x"], lambda: 0)
        recorder = Recorder(rec_node, tmp_path / "discarded", ["/x"], lambda: 0)
        assert recorder.close(keep=False) is None
    assert (tmp_path / "precious" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["precious"]  # nothing half-written left behind


def test_cli_explains_a_bad_bag(tmp_path: Path) -> None:
    exe = BIN_DIR / "pwm_replay"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pwm_ros.replay"]
    proc = subprocess.run([*cmd, str(tmp_path / "missing")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1].startswith("error: bag path") and "does not exist" in proc.stderr
    help_text = subprocess.run([*cmd, "--help"], capture_output=True, text=True, timeout=60).stdout
    for flag in ("--rate", "--loop", "--record"):
        assert flag in help_text
