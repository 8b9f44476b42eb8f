"""pwm_node over real DDS with a real model directory (tiny preset, ONNX Runtime on the CPU).

A probe node publishes camera frames the way a driver does and checks what comes back: Paths equal to the
PolicyRunner's plans on the same frames, compressed input, previews only while subscribed, lifecycle transitions,
latest-frame-only drops, and bad inputs that end in a warning, a diagnostic count and a live node.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -e .[ros])")

from diagnostic_msgs.msg import DiagnosticArray  # noqa: E402
from nav_msgs.msg import Path as PathMsg  # noqa: E402
from rclpy.node import Node  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import QoSProfile, qos_profile_sensor_data  # noqa: E402
from rosgraph_msgs.msg import Clock  # noqa: E402
from sensor_msgs.msg import CompressedImage, Image  # noqa: E402
from std_msgs.msg import Float32  # noqa: E402

from pwm_model.config import RuntimeConfig  # noqa: E402
from pwm_model.data import images  # noqa: E402
from pwm_model.runtime.types import EgoInput  # noqa: E402
from pwm_ros import conversions  # noqa: E402
from pwm_ros.node import PwmNode  # noqa: E402
from pwm_ros.overlay import draw_path  # noqa: E402

from .conftest import BIN_DIR  # noqa: E402
from .drive_helpers import huge_png_header  # noqa: E402
from .model_utils import nan_model_dir, tiny_model_dir  # noqa: E402
from .ros_utils import DRIVER_QOS, Probe, own_domain, spinning, wait_for  # noqa: E402

runner_module = pytest.importorskip("pwm_model.runtime.runner", reason="PolicyRunner is not part of this build yet")

NODE = "/pwm_node"
CAMERA = "/camera/front/image_raw"
T0_NS = 1_700_000_000_000_000_000
DT_NS = 100_000_000  # a 10 Hz camera


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_model_dir()


def _runtime() -> RuntimeConfig:
    return RuntimeConfig(intra_op_threads=1)  # the node and the reference runner sum in the same order


def _node(model_dir: Path, **values: Any):  # noqa: ANN202 - a node factory for spinning()
    # Reliable camera subscription: on a loaded test machine a best-effort sample can be lost, and these tests
    # count every frame (the default best-effort subscription is what the console-script test uses).
    base = {"model_dir": str(model_dir), "intra_op_threads": 1, "planning_rate_hz": 100.0,
            "max_frame_age_ms": 60_000.0, "diagnostics_period_s": 0.2, "odom_topic": "",
            "camera_reliability": "reliable", "camera_depth": 10}
    base.update(values)
    overrides = [Parameter(k, value=v) for k, v in base.items()]
    return lambda: PwmNode(parameter_overrides=overrides)


def _frames(n: int, h: int, w: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
    return [np.roll(base, 3 * k, axis=1) for k in range(n)]  # a scene moving sideways


def _image(rgb: np.ndarray, t_ns: int, encoding: str = "rgb8") -> Image:
    msg = conversions.rgb_to_image(rgb, t_ns, "camera_front", encoding)
    return msg


def _stamp(msg: Any) -> int:
    return conversions.stamp_to_ns(msg.header.stamp)


def _diag(msgs: list[DiagnosticArray]) -> tuple[int, str, dict[str, str]]:
    status = msgs[-1].status[0]
    return status.level[0], status.message, {kv.key: kv.value for kv in status.values}


def _diag_after(msgs: list[DiagnosticArray], cond, timeout_s: float = 10.0) -> dict[str, str]:  # noqa: ANN001
    """Wait for a diagnostics message whose values satisfy ``cond``; returns its values (or the last ones)."""
    def check() -> bool:
        return bool(msgs) and cond(*_diag(msgs))
    wait_for(check, timeout_s)
    return _diag(msgs)[2] if msgs else {}


class LogWatch:
    """The node's log lines as written to the console (stderr), gathered while a test waits for them."""

    def __init__(self, capfd: pytest.CaptureFixture[str]) -> None:
        self.capfd, self.text = capfd, ""

    def has(self, needle: str, timeout_s: float = 10.0) -> bool:
        def seen() -> bool:
            out, err = self.capfd.readouterr()
            self.text += out + err
            return needle in self.text
        return bool(wait_for(seen, timeout_s, 0.05))


class Camera:
    """The probe's camera driver: reliable publisher (REP-2003), optional /clock for sim time."""

    def __init__(self, probe: Probe, topic: str = CAMERA, compressed: bool = False, sim_time: bool = False,
                 qos: QoSProfile = DRIVER_QOS) -> None:
        self.pub = probe.create_publisher(CompressedImage if compressed else Image, topic, qos)
        self.clock = probe.create_publisher(Clock, "/clock", DRIVER_QOS) if sim_time else None
        self.compressed = compressed

    def send(self, msg: Any) -> None:
        if self.clock is not None:
            self.clock.publish(Clock(clock=msg.header.stamp))
            time.sleep(0.01)  # let /clock land first
        self.pub.publish(msg)


def _wait_active(probe: Probe, node: PwmNode, camera: Camera) -> None:
    assert probe.transition(NODE, "configure"), node._stats.engine_state  # noqa: SLF001
    assert probe.transition(NODE, "activate")
    assert wait_for(lambda: camera.pub.get_subscription_count() > 0, 10.0), "the node never subscribed"


def _send_and_wait(camera: Camera, paths: list, msg: Any, timeout_s: float = 15.0) -> PathMsg | None:
    t_ns = _stamp(msg)
    camera.send(msg)
    return wait_for(lambda: next((p for p in paths if _stamp(p) == t_ns), None), timeout_s)


def test_paths_equal_the_runner_on_the_same_frames(model_dir: Path) -> None:
    runner = runner_module.PolicyRunner.from_model_dir(model_dir, _runtime())
    cfg = runner.config
    frames = _frames(6, cfg.camera.height_px, cfg.camera.width_px)
    with spinning(_node(model_dir, use_sim_time=True), Probe) as (_, (node, probe)):
        paths = probe.listen(PathMsg, f"{NODE}/trajectory")
        surprise = probe.listen(Float32, f"{NODE}/surprise")
        camera = Camera(probe, sim_time=True)
        _wait_active(probe, node, camera)
        got = []
        for k, rgb in enumerate(frames):  # one at a time: the node plans every frame, as the runner below does
            path = _send_and_wait(camera, paths, _image(rgb, T0_NS + k * DT_NS))
            assert path is not None, f"no Path for frame {k}"
            got.append(path)
    try:
        for k, (rgb, path) in enumerate(zip(frames, got)):
            plan = runner.step(rgb, T0_NS + k * DT_NS, EgoInput())
            assert path.header.frame_id == "base_link"
            assert _stamp(path) == T0_NS + k * DT_NS  # header stamp = camera stamp
            assert len(path.poses) == cfg.data.num_waypoints
            xyyaw, pose_t_ns = conversions.path_to_xyyaw(path)
            np.testing.assert_array_equal(pose_t_ns, plan.waypoint_t_ns)
            assert np.all(np.diff(pose_t_ns) == int(cfg.data.waypoint_dt_s * 1e9))  # stamped at +dt each
            assert pose_t_ns[0] == _stamp(path) + int(cfg.data.waypoint_dt_s * 1e9)
            np.testing.assert_allclose(xyyaw, plan.waypoints_xyyaw, rtol=0, atol=2e-6)  # float32 -> Path -> float64
    finally:
        runner.close()
    assert len(surprise) >= 1 and all(np.isfinite(s.data) for s in surprise)


def test_an_int8_model_runs_in_the_node_like_any_other(tmp_path: Path) -> None:
    from pwm_model.export.engines import main as build_engine

    from .export_helpers import copy_model_dir

    d = copy_model_dir(tmp_path / "m")
    assert build_engine(["--model", str(d), "--backend", "onnxruntime", "--precision", "int8", "--calib",
                         "synthetic:7", "--calib-frames", "4", "--graphs", "ctx_encoder", "rollout"]) == 0
    runner = runner_module.PolicyRunner.from_model_dir(d, RuntimeConfig(intra_op_threads=1, precision="int8"))
    assert runner.engines["rollout"].path.parent.name == "int8"
    cfg = runner.config
    frames = _frames(3, cfg.camera.height_px, cfg.camera.width_px)
    with spinning(_node(d, use_sim_time=True, precision="int8"), Probe) as (_, (node, probe)):
        paths = probe.listen(PathMsg, f"{NODE}/trajectory")
        camera = Camera(probe, sim_time=True)
        _wait_active(probe, node, camera)
        got = [_send_and_wait(camera, paths, _image(rgb, T0_NS + k * DT_NS)) for k, rgb in enumerate(frames)]
    try:
        for k, (rgb, path) in enumerate(zip(frames, got)):
            assert path is not None, f"no Path for frame {k}"
            plan = runner.step(rgb, T0_NS + k * DT_NS, EgoInput())
            np.testing.assert_allclose(conversions.path_to_xyyaw(path)[0], plan.waypoints_xyyaw, rtol=0, atol=2e-6)
    finally:
        runner.close()


def test_odometry_and_command_reach_the_runner(model_dir: Path) -> None:
    from nav_msgs.msg import Odometry
    from std_msgs.msg import UInt8

    runner = runner_module.PolicyRunner.from_model_dir(model_dir, _runtime())
    frames = _frames(3, runner.config.camera.height_px, runner.config.camera.width_px, seed=2)
    with spinning(_node(model_dir, odom_topic="/odom"), Probe) as (_, (node, probe)):
        paths = probe.listen(PathMsg, f"{NODE}/trajectory")
        diags = probe.listen(DiagnosticArray, "/diagnostics")
        odom_pub = probe.create_publisher(Odometry, "/odom", DRIVER_QOS)
        command_pub = probe.create_publisher(UInt8, "/route/command", DRIVER_QOS)
        camera = Camera(probe)
        _wait_active(probe, node, camera)
        assert wait_for(lambda: odom_pub.get_subscription_count() and command_pub.get_subscription_count(), 5.0)
        command_pub.publish(UInt8(data=1))  # straight, for how long unknown
        command_pub.publish(UInt8(data=2))  # right: a change, its age counted from the next camera frame's stamp
        command_pub.publish(UInt8(data=7))  # not a command: counted and ignored
        assert wait_for(lambda: node._stats.counts["bad_commands"] == 1, 5.0)  # noqa: SLF001
        assert node._command.value == 2  # noqa: SLF001
        t0 = node.get_clock().now().nanoseconds
        got = []
        for k, rgb in enumerate(frames):
            for dt_ns in (-200_000_000, 0):  # two odometry samples: 6 m/s, steady, turning left at 0.25 rad/s
                odom = Odometry()
                odom.header.stamp = conversions.ns_to_stamp(t0 + k * DT_NS + dt_ns)
                odom.twist.twist.linear.x = 6.0
                odom.twist.twist.angular.z = 0.25
                odom_pub.publish(odom)
            time.sleep(0.1)
            got.append(_send_and_wait(camera, paths, _image(rgb, t0 + k * DT_NS)))
        assert wait_for(lambda: node._stats.counts["bad_commands"] == 1, 5.0)  # noqa: SLF001
        # implausible odometry (a speed, or a yaw rate at a plausible speed): counted and ignored, never planned on
        for speed, yaw_rate in ((10_000.0, 0.0), (float("nan"), 0.0), (1e30, 0.0), (6.0, float("nan")),
                                (6.0, -4.0), (6.0, float("inf"))):
            odom = Odometry()
            odom.header.stamp = conversions.ns_to_stamp(t0 + len(frames) * DT_NS)
            odom.twist.twist.linear.x, odom.twist.twist.angular.z = speed, yaw_rate
            odom_pub.publish(odom)
        assert wait_for(lambda: node._stats.counts["bad_odometry"] == 6, 5.0)  # noqa: SLF001
        assert all(v == 6.0 and w == 0.25 for _, v, w in node._odom)  # noqa: SLF001
        assert {"bad odometry", "bad odometry yaw rate"} <= node._warned  # noqa: SLF001 - each warned about once
        _diag_after(diags, lambda lvl, m, v: int(v["bad_odometry"]) == 6)
        assert any(a.status[0].level[0] == 2 and "impossible speed" in a.status[0].message for a in list(diags))
    try:
        assert all(p is not None for p in got)
        other = runner_module.PolicyRunner.from_model_dir(model_dir, _runtime())
        for k, (rgb, path) in enumerate(zip(frames, got)):
            plan = runner.step(rgb, t0 + k * DT_NS, EgoInput(speed_mps=6.0, accel_mps2=0.0, command=2,
                                                             yaw_rate_radps=0.25, command_age_s=k * DT_NS / 1e9))
            xyyaw = conversions.path_to_xyyaw(path)[0]
            np.testing.assert_allclose(xyyaw, plan.waypoints_xyyaw, rtol=0, atol=2e-6)  # same inputs, same sums
            without = other.step(rgb, t0 + k * DT_NS, EgoInput()).waypoints_xyyaw
            assert np.abs(xyyaw - without).max() > 1e-5  # the ego input did change the plan
        other.close()
    finally:
        runner.close()


def test_compressed_input_plans_like_the_decoded_frame(model_dir: Path) -> None:
    runner = runner_module.PolicyRunner.from_model_dir(model_dir, _runtime())
    h, w = runner.config.camera.height_px, runner.config.camera.width_px
    frames = _frames(3, h, w, seed=1)
    with spinning(_node(model_dir, use_compressed=True), Probe) as (_, (node, probe)):
        paths = probe.listen(PathMsg, f"{NODE}/trajectory")
        camera = Camera(probe, topic=CAMERA + "/compressed", compressed=True)
        _wait_active(probe, node, camera)
        now = node.get_clock().now().nanoseconds
        msgs = [conversions.rgb_to_compressed(rgb, now + k * DT_NS, "camera_front", "jpeg", 90)
                for k, rgb in enumerate(frames)]
        got = [_send_and_wait(camera, paths, m) for m in msgs]
    try:
        assert all(p is not None for p in got)
        for m, path in zip(msgs, got):
            plan = runner.step(images.decode_compressed(m.data, m.format), _stamp(m), EgoInput())
            np.testing.assert_allclose(conversions.path_to_xyyaw(path)[0], plan.waypoints_xyyaw, rtol=0, atol=2e-6)
    finally:
        runner.close()


def test_previews_exist_only_while_subscribed(model_dir: Path) -> None:
    with spinning(_node(model_dir, preview_rate_hz=30.0), Probe) as (_, (node, probe)):
        paths = probe.listen(PathMsg, f"{NODE}/trajectory")
        diags = probe.listen(DiagnosticArray, "/diagnostics")
        camera = Camera(probe)
        _wait_active(probe, node, camera)
        h, w = node._runner.config.camera.height_px, node._runner.config.camera.width_px  # noqa: SLF001
        frames = _frames(12, h, w)
        t0 = node.get_clock().now().nanoseconds

        def send(k: int) -> None:
            assert _send_and_wait(camera, paths, _image(frames[k], t0 + k * DT_NS)) is not None

        for k in range(3):
            send(k)
        assert _diag_after(diags, lambda lvl, msg, v: int(v["frames_planned"]) >= 3)["previews_published"] == "0"
        forecast, overlay = [], []
        subs = [probe.create_subscription(Image, f"{NODE}/forecast/image", forecast.append, DRIVER_QOS),
                probe.create_subscription(Image, f"{NODE}/overlay/image", overlay.append, DRIVER_QOS)]
        assert wait_for(lambda: node._pubs["forecast"].get_subscription_count() > 0, 5.0)  # noqa: SLF001
        assert wait_for(lambda: node._pubs["overlay"].get_subscription_count() > 0, 5.0)  # noqa: SLF001
        for k in range(3, 8):
            send(k)
            time.sleep(0.05)  # preview_rate_hz 30
        assert wait_for(lambda: forecast and overlay, 5.0)
        fc = conversions.image_to_rgb(forecast[-1])
        forecast_frames = node._runner.config.world_model.forecast_frames  # noqa: SLF001
        assert fc.shape[1] % forecast_frames == 0 and fc.shape[1] // forecast_frames == fc.shape[0] * 2  # tiles
        last = overlay[-1]  # once: the probe keeps receiving overlays while this runs
        ov = conversions.image_to_rgb(last)
        assert _stamp(last) in {t0 + k * DT_NS for k in range(3, 8)}
        planned = next(p for p in paths if _stamp(p) == _stamp(last))
        expect = draw_path(frames[_index(last, t0)], node._runner.camera,  # noqa: SLF001
                           conversions.path_to_xyyaw(planned)[0])
        np.testing.assert_array_equal(ov, expect)  # the camera image with this plan's path projected
        for sub in subs:
            probe.destroy_subscription(sub)
        assert wait_for(lambda: node._pubs["forecast"].get_subscription_count() == 0, 5.0)  # noqa: SLF001
        assert wait_for(lambda: node._pubs["overlay"].get_subscription_count() == 0, 5.0)  # noqa: SLF001
        assert wait_for(node._worker.idle, 10.0)  # noqa: SLF001 - the last preview has gone out
        n_diag = len(diags)
        assert wait_for(lambda: len(diags) >= n_diag + 2, 5.0)  # a report made after it
        before = int(_diag(diags)[2]["previews_published"])
        assert before >= 2
        for k in range(8, 12):
            send(k)
        after = _diag_after(diags, lambda lvl, msg, v: int(v["frames_planned"]) >= 12)
        assert int(after["previews_published"]) == before  # nobody listening: nothing decoded or published


def _index(msg: Image, t0: int) -> int:
    return (_stamp(msg) - t0) // DT_NS


def test_lifecycle_transitions(model_dir: Path, tmp_path: Path) -> None:
    with spinning(_node(tmp_path / "no_model"), Probe) as (_, (node, probe)):
        paths = probe.listen(PathMsg, f"{NODE}/trajectory")
        diags = probe.listen(DiagnosticArray, "/diagnostics")
        camera = Camera(probe)
        assert probe.state(NODE) == "unconfigured"
        assert not probe.transition(NODE, "configure")  # a missing model directory: FAILURE, still unconfigured
        assert probe.state(NODE) == "unconfigured"
        values = _diag_after(diags, lambda lvl, msg, v: lvl == 2)
        assert values["engine_state"].startswith("error: configure failed")
        assert probe.set_parameter(NODE, "model_dir", str(model_dir)).successful
        assert probe.transition(NODE, "configure") and probe.state(NODE) == "inactive"
        assert node._runner is not None  # noqa: SLF001 - loaded and warmed up on configure
        assert camera.pub.get_subscription_count() == 0  # inactive: no subscription, no work
        h, w = node._runner.config.camera.height_px, node._runner.config.camera.width_px  # noqa: SLF001
        rgb = _frames(1, h, w)[0]
        camera.send(_image(rgb, node.get_clock().now().nanoseconds))
        time.sleep(0.3)
        assert paths == []
        assert probe.transition(NODE, "activate") and probe.state(NODE) == "active"
        assert wait_for(lambda: camera.pub.get_subscription_count() == 1, 5.0)
        assert _send_and_wait(camera, paths, _image(rgb, node.get_clock().now().nanoseconds)) is not None
        assert probe.transition(NODE, "deactivate") and probe.state(NODE) == "inactive"
        assert wait_for(lambda: camera.pub.get_subscription_count() == 0, 5.0)
        n = len(paths)
        camera.send(_image(rgb, node.get_clock().now().nanoseconds))
        time.sleep(0.3)
        assert len(paths) == n
        assert _diag_after(diags, lambda lvl, msg, v: "not active" in msg)["engine_state"] == "ready"
        assert probe.transition(NODE, "cleanup") and probe.state(NODE) == "unconfigured"
        assert node._runner is None  # noqa: SLF001 - engines freed
        assert probe.transition(NODE, "configure") and probe.transition(NODE, "activate")  # again, cleanly
        assert wait_for(lambda: camera.pub.get_subscription_count() == 1, 5.0)
        assert _send_and_wait(camera, paths, _image(rgb, node.get_clock().now().nanoseconds)) is not None
        assert probe.transition(NODE, "deactivate") and probe.transition(NODE, "inactive_shutdown")
        assert probe.state(NODE) == "finalized"


def test_latest_frame_only_drops_are_counted_and_publish_nothing(model_dir: Path) -> None:
    # deep: every frame of the burst reaches the node, whose one-frame slot does the dropping
    with spinning(_node(model_dir, planning_rate_hz=2.0, camera_depth=50),
                  Probe) as (_, (node, probe)):
        paths = probe.listen(PathMsg, f"{NODE}/trajectory")
        diags = probe.listen(DiagnosticArray, "/diagnostics")
        camera = Camera(probe)
        _wait_active(probe, node, camera)
        h, w = node._runner.config.camera.height_px, node._runner.config.camera.width_px  # noqa: SLF001
        frames = _frames(20, h, w)
        t0 = node.get_clock().now().nanoseconds
        sent = [t0 + k * DT_NS for k in range(20)]
        for rgb, t_ns in zip(frames, sent):  # a burst much faster than planning_rate_hz
            camera.send(_image(rgb, t_ns))
            time.sleep(0.02)
        assert wait_for(lambda: paths and _stamp(paths[-1]) == sent[-1], 10.0), "the newest frame was not planned"
        values = _diag_after(diags, lambda lvl, msg, v: int(v["frames_received"]) == 20 and int(
            v["frames_planned"]) == len(paths))
    stamps = [_stamp(p) for p in paths]
    assert set(stamps) <= set(sent) and stamps == sorted(stamps)
    assert len(stamps) < len(sent)  # frames were dropped, never queued
    assert int(values["frames_planned"]) == len(stamps)
    assert int(values["dropped_frames"]) == len(sent) - len(stamps)  # every frame is planned or counted


def test_bad_inputs_warn_count_and_the_node_lives_on(model_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    with spinning(_node(model_dir), Probe) as (_, (node, probe)):
        paths = probe.listen(PathMsg, f"{NODE}/trajectory")
        diags = probe.listen(DiagnosticArray, "/diagnostics")
        logs = LogWatch(capfd)
        camera = Camera(probe)
        _wait_active(probe, node, camera)
        h, w = node._runner.config.camera.height_px, node._runner.config.camera.width_px  # noqa: SLF001
        rgb = _frames(1, h, w)[0]
        clock = node.get_clock()

        def good() -> None:
            assert _send_and_wait(camera, paths, _image(rgb, clock.now().nanoseconds)) is not None, \
                "no plan after a bad input: the node did not recover"

        def bad(msg: Image, counter: str, log_text: str, level: int | None = 2, plans: bool = False) -> None:
            before = int(_diag(diags)[2][counter]) if diags else 0
            n = len(paths)
            camera.send(msg)
            values = _diag_after(diags, lambda lvl, m, v: int(v[counter]) == before + 1)
            assert int(values[counter]) == before + 1, f"{counter} not counted: {values}"
            if level is not None:
                assert _diag(diags)[0] == level, _diag(diags)
            assert logs.has(log_text), f"no warning containing {log_text!r}"
            if plans:  # a frame after a backwards time jump is planned, from a fresh history
                assert wait_for(lambda: len(paths) == n + 1, 5.0) and _stamp(paths[-1]) == _stamp(msg)
            else:
                assert len(paths) == n  # no plan from a bad frame
            good()
            assert _diag_after(diags, lambda lvl, m, v: lvl < 2)["engine_state"] == "active"  # recovered

        good()
        unknown = _image(rgb, clock.now().nanoseconds)
        unknown.encoding = "weird_encoding_16"
        bad(unknown, "bad_frames", "weird_encoding_16")
        zero = _image(rgb, clock.now().nanoseconds)
        zero.width = 0
        bad(zero, "bad_frames", "zero size")
        truncated = _image(rgb, clock.now().nanoseconds)
        truncated.data = truncated.data[: len(truncated.data) // 2]
        bad(truncated, "bad_frames", "truncated")
        now = clock.now().nanoseconds
        good_later = _image(rgb, now + 50_000_000)
        assert _send_and_wait(camera, paths, good_later) is not None
        bad(_image(rgb, now), "time_jumps", "went back", level=None, plans=True)  # stamps going backwards
        stale = _image(rgb, clock.now().nanoseconds - 120_000_000_000)
        probe.set_parameter(NODE, "max_frame_age_ms", 1000.0)
        jumps = node._stats.counts["time_jumps"]  # noqa: SLF001
        bad(stale, "stale_frames", "old skipped", level=1)
        bad(_image(rgb, clock.now().nanoseconds + 86_400_000_000_000), "future_frames", "in the future", level=1)
        assert node._stats.counts["time_jumps"] == jumps  # noqa: SLF001 - neither reset the history
        # corrupt JPEG on the compressed input (takes effect on the next activate)
        assert probe.set_parameter(NODE, "use_compressed", True).successful
        assert probe.transition(NODE, "deactivate") and probe.transition(NODE, "activate")
        jpeg = Camera(probe, topic=CAMERA + "/compressed", compressed=True)
        assert wait_for(lambda: jpeg.pub.get_subscription_count() > 0, 5.0)
        camera = jpeg
        good_jpeg = conversions.rgb_to_compressed(rgb, clock.now().nanoseconds, "camera_front")

        def good() -> None:  # noqa: F811 - the compressed variant
            good_jpeg.header.stamp = conversions.ns_to_stamp(clock.now().nanoseconds)
            assert _send_and_wait(camera, paths, good_jpeg) is not None

        corrupt = conversions.rgb_to_compressed(rgb, clock.now().nanoseconds, "camera_front")
        corrupt.data = corrupt.data[:40] + corrupt.data[40:200][::-1]
        bad(corrupt, "bad_frames", "compressed")
        huge = conversions.rgb_to_compressed(rgb, clock.now().nanoseconds, "camera_front", "png")
        huge.data = huge_png_header(30000, 30000)  # 30000 x 30000 declared in a few bytes: refused unread
        bad(huge, "bad_frames", "refused before decoding")
        assert probe.state(NODE) == "active"


def test_nan_from_the_engine_is_never_published(model_dir: Path, tmp_path: Path,
                                                capfd: pytest.CaptureFixture[str]) -> None:
    poisoned = nan_model_dir(model_dir, tmp_path / "nan_model")
    with spinning(_node(poisoned), Probe) as (_, (node, probe)):
        paths = probe.listen(PathMsg, f"{NODE}/trajectory")
        diags = probe.listen(DiagnosticArray, "/diagnostics")
        logs = LogWatch(capfd)
        camera = Camera(probe)
        _wait_active(probe, node, camera)
        h, w = node._runner.config.camera.height_px, node._runner.config.camera.width_px  # noqa: SLF001
        for k, rgb in enumerate(_frames(3, h, w)):
            camera.send(_image(rgb, node.get_clock().now().nanoseconds))
            values = _diag_after(diags, lambda lvl, m, v, k=k: int(v["nan_plans"]) >= k + 1)
            assert int(values["nan_plans"]) == k + 1  # every frame: counted, nothing published
        assert _diag(diags)[0] == 2 and "non-finite" in _diag(diags)[1]
        assert logs.has("non-finite")
        assert paths == [] and probe.state(NODE) == "active"


def test_incompatible_camera_qos_is_reported_with_the_remedy(model_dir: Path,
                                                             capfd: pytest.CaptureFixture[str]) -> None:
    with spinning(_node(model_dir, camera_reliability="reliable"), Probe) as (_, (node, probe)):
        diags = probe.listen(DiagnosticArray, "/diagnostics")
        logs = LogWatch(capfd)
        assert probe.transition(NODE, "configure") and probe.transition(NODE, "activate")
        best_effort = probe.create_publisher(Image, CAMERA, qos_profile_sensor_data)
        values = _diag_after(diags, lambda lvl, m, v: int(v["qos_incompatible"]) >= 1 and "incompatible" in m, 30.0)
        assert logs.has("camera_reliability:=best_effort"), logs.text[-2000:]
        assert int(values["qos_incompatible"]) >= 1
        assert best_effort.get_subscription_count() == 0


def test_replay_through_the_node_records_every_plan(model_dir: Path, tmp_path: Path) -> None:
    from rosbags.highlevel import AnyReader

    from pwm_model.config import TopicsConfig
    from pwm_model.data.bag_writer import write_drive
    from pwm_model.data.schema import Boxes, DriveSample, EgoState
    from pwm_ros.replay import Player, Recorder, default_record_topics

    runner = runner_module.PolicyRunner.from_model_dir(model_dir, _runtime())
    cam = runner.config.camera
    runner.close()
    frames = _frames(8, cam.height_px, cam.width_px)
    samples = [DriveSample(T0_NS + k * DT_NS, rgb, EgoState(T0_NS + k * DT_NS, 1.0 * k, 0.0, 0.0, speed_mps=10.0),
                           1, Boxes()) for k, rgb in enumerate(frames)]
    bag = write_drive(tmp_path / "drive", samples, cam, TopicsConfig())
    out = tmp_path / "predictions"
    with spinning(_node(model_dir, use_sim_time=True, odom_topic="/odom", max_frame_age_ms=1000.0), Probe,
                  lambda: Node("pwm_replay")) as (_, (node, probe, replayer)):
        player = Player(replayer, bag, rate=0.5)
        recorder = Recorder(replayer, out, default_record_topics(NODE), lambda: player.now_ns or player.start_ns)
        assert probe.transition(NODE, "configure") and probe.transition(NODE, "activate")
        assert player.wait_for_subscribers(10.0)
        assert wait_for(lambda: "/pwm_node/trajectory" in recorder.subscribed, 10.0)
        player.play()
        assert wait_for(node._worker.idle, 10.0)  # noqa: SLF001
        planned = node._stats.counts["frames_planned"]  # noqa: SLF001
        assert wait_for(lambda: recorder.counts.get("/pwm_node/trajectory", 0) == planned, 10.0)
        recorder.close()
    with AnyReader([out]) as reader:
        stamps = [_stamp(reader.deserialize(raw, c.msgtype)) for c, _, raw in reader.messages()
                  if c.topic == "/pwm_node/trajectory"]
        topics = {c.topic for c in reader.connections}
    assert "/diagnostics" in topics
    frame_stamps = [T0_NS + k * DT_NS for k in range(len(frames))]
    assert set(stamps) <= set(frame_stamps) and stamps == sorted(stamps)
    assert len(stamps) == planned >= 3  # every plan the node made is in the bag, with its camera stamp


def test_console_script_autostarts_in_its_own_process(model_dir: Path) -> None:
    with own_domain():
        _console_script_autostarts(model_dir)


def _console_script_autostarts(model_dir: Path) -> None:
    exe = BIN_DIR / "pwm_node"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pwm_ros.node"]
    proc = subprocess.Popen([*cmd, "--ros-args", "--params-file", str(Path(__file__).parents[1] / "config" /
                                                                        "pwm.yaml"),
                             "-p", f"model_dir:={model_dir}", "-p", "autostart:=true", "-p", "intra_op_threads:=1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ))
    try:
        with spinning(Probe) as (_, (probe,)):
            paths = probe.listen(PathMsg, f"{NODE}/trajectory")
            pub = probe.create_publisher(Image, CAMERA, DRIVER_QOS)
            assert wait_for(lambda: pub.get_subscription_count() > 0, 60.0), "the node never became active"
            rgb = _frames(1, 128, 256)[0]
            for _ in range(50):
                pub.publish(_image(rgb, probe.get_clock().now().nanoseconds))
                if wait_for(lambda: paths, 0.2):
                    break
            assert paths and paths[0].header.frame_id == "base_link"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            out, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert proc.returncode == 0, out[-2000:]
    assert "active:" in out



def test_a_publisher_of_another_type_on_the_camera_topic_is_named_with_the_remedy(
        model_dir: Path, capfd: pytest.CaptureFixture[str]) -> None:
    import os

    import rclpy
    from std_msgs.msg import String

    with spinning(_node(model_dir), Probe) as (_, (node, probe)):
        diags = probe.listen(DiagnosticArray, "/diagnostics")
        logs = LogWatch(capfd)
        assert probe.transition(NODE, "configure") and probe.transition(NODE, "activate")
        other = rclpy.Context()  # a participant of its own: one participant cannot hold both types on a topic
        rclpy.init(context=other, domain_id=int(os.environ["ROS_DOMAIN_ID"]))
        try:
            wrong_node = rclpy.create_node("wrong_camera", context=other)
            wrong = wrong_node.create_publisher(String, CAMERA, 10)
            wrong.publish(String(data="not an image"))
            values = _diag_after(diags, lambda lvl, m, v: int(v.get("camera_type_mismatch", 0)) >= 1)
            assert int(values["camera_type_mismatch"]) >= 1, values
            assert wait_for(lambda: logs.has("std_msgs/msg/String"), 5.0)
            assert logs.has("point camera_topic at the camera's image topic")
            assert any(a.status[0].level[0] == 1 and "another message type" in a.status[0].message
                       for a in list(diags))
            wrong_node.destroy_node()
        finally:
            rclpy.shutdown(context=other)
