"""``pwm_sim`` over real DDS: the closed loop through ROS 2 scores as the in-process loop does, and bad planners
end in one sentence.

The node is the real ``pwm_node`` (tiny random model, ONNX Runtime on the CPU), in this process with an rclpy
context of its own, or started by ``pwm_sim --start-node``; the planners that misbehave are tiny test nodes.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -e .[ros])")

import rclpy  # noqa: E402
from geometry_msgs.msg import PoseStamped  # noqa: E402
from nav_msgs.msg import Path as PathMsg  # noqa: E402
from rclpy.executors import SingleThreadedExecutor  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402
from rclpy.qos import qos_profile_sensor_data  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from pwm_model.runtime.manifest import load_manifest  # noqa: E402
from pwm_model.sim.loop import DriveLog, run_drive  # noqa: E402
from pwm_model.sim.score import score_drive  # noqa: E402
from pwm_ros.sim import main as sim_main  # noqa: E402
from pwm_ros.sim_bridge import PLAN_QOS, RosPlanner  # noqa: E402

from .model_utils import tiny_model_dir  # noqa: E402
from .ros_utils import own_domain  # noqa: E402

pytest.importorskip("pwm_model.runtime.runner", reason="PolicyRunner is not part of this build yet")

SEEDS = (200, 201)
SECONDS = 8.0


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return tiny_model_dir()


@contextlib.contextmanager
def _spun(make: Callable[[Any], Any]) -> Iterator[Any]:
    """``make(context)``'s node spinning in a thread, in an rclpy context of its own (the bridge may use it too)."""
    with own_domain() as domain:
        ctx = rclpy.Context()
        rclpy.init(context=ctx, domain_id=domain)
        executor = SingleThreadedExecutor(context=ctx)
        node = make(ctx)
        executor.add_node(node)
        thread = threading.Thread(target=executor.spin, daemon=True)
        thread.start()
        try:
            yield ctx
        finally:
            executor.shutdown(timeout_sec=5.0)
            thread.join(5.0)
            node.destroy_node()
            ctx.try_shutdown()


@contextlib.contextmanager
def _bridge_context() -> Iterator[None]:
    """The default rclpy context, for the bridge: a DDS participant apart from the node's, as across processes."""
    with own_domain() as domain:
        rclpy.init(domain_id=domain)
        try:
            yield
        finally:
            rclpy.try_shutdown()


def _pwm_node(model_dir: Path) -> Callable[[Any], Any]:
    def make(ctx: Any) -> Any:
        from pwm_ros.node import PwmNode

        node = PwmNode(context=ctx, parameter_overrides=[
            Parameter("model_dir", value=str(model_dir)), Parameter("use_sim_time", value=True),
            Parameter("planning_rate_hz", value=100.0)])
        node.trigger_configure()
        node.trigger_activate()
        assert node._stats.engine_state == "active", node._stats.engine_state  # noqa: SLF001
        return node
    return make


def _fake_planner(name: str, frame_id: str | None, own_stamp: bool = False) -> Callable[[Any], Any]:
    """A planner that answers every frame with a one-pose Path in ``frame_id`` (None: never answers), stamped with
    the frame's stamp (``own_stamp``: with its own clock's)."""
    def make(ctx: Any) -> Any:
        node = rclpy.create_node(name, context=ctx)
        pub = node.create_publisher(PathMsg, f"/{name}/trajectory", PLAN_QOS)

        def answer(img: Image) -> None:
            if frame_id is not None:
                path = PathMsg()
                path.header.stamp, path.header.frame_id = img.header.stamp, frame_id
                if own_stamp:
                    path.header.stamp = node.get_clock().now().to_msg()
                path.poses = [PoseStamped()]
                path.poses[0].pose.position.x = 1.0
                pub.publish(path)
        node.create_subscription(Image, "/camera/front/image_raw", answer, qos_profile_sensor_data)
        return node
    return make


def _infractions(score: Any) -> list[tuple[str, int]]:
    return [(i.kind, i.frame) for i in score.infractions]


def _same_plans(a: DriveLog, b: DriveLog) -> float:
    """The largest difference between the plans of two drives, tick by tick (they must plan on the same ticks)."""
    assert len(a.ticks) == len(b.ticks), (len(a.ticks), len(b.ticks))
    worst = 0.0
    for ta, tb in zip(a.ticks, b.ticks):
        assert (ta.plan_xy_m is None) == (tb.plan_xy_m is None), ta.t_s
        if ta.plan_xy_m is not None:
            worst = max(worst, float(np.max(np.abs(ta.plan_xy_m - tb.plan_xy_m))))
    return worst


def test_lock_step_through_ros_scores_as_in_process(model_dir: Path) -> None:
    from pwm_model.sim.planners import RunnerPlanner

    local = RunnerPlanner(model_dir)
    cfg = local.config
    experts = {s: run_drive(s, None, cfg, seconds=SECONDS, keep_frames=False) for s in SEEDS}
    in_process = {s: run_drive(s, local, cfg, seconds=SECONDS, keep_frames=False) for s in SEEDS}
    local.close()
    with _spun(_pwm_node(model_dir)), _bridge_context():
        bridge = RosPlanner(cfg, timeout_s=30.0, wait_s=30.0)
        try:
            through_ros = {s: run_drive(s, bridge, cfg, seconds=SECONDS, keep_frames=False) for s in SEEDS}
        finally:
            bridge.close()
    for s in SEEDS:
        a, b = score_drive(in_process[s], experts[s]), score_drive(through_ros[s], experts[s])
        assert _same_plans(in_process[s], through_ros[s]) < 1e-4
        assert _infractions(a) == _infractions(b)
        assert abs(a.epdms - b.epdms) <= 0.01, (s, a.epdms, b.epdms)
    report = bridge.report()
    assert report["mode"] == "lock-step" and report["plans"] == report["ticks"] > 0


def test_realtime_lets_the_world_run_on_and_counts_late_plans(model_dir: Path) -> None:
    cfg = load_manifest(model_dir).config
    with _spun(_pwm_node(model_dir)), _bridge_context():
        bridge = RosPlanner(cfg, realtime=True, rate=2.0, wait_s=30.0)
        try:
            log = run_drive(SEEDS[0], bridge, cfg, seconds=6.0, keep_frames=False)
        finally:
            bridge.close()
    report = bridge.report()
    assert report["mode"] == "realtime" and report["ticks"] > 0 and report["plans"] > 0
    assert report["plans"] + report["ticks_without_plan"] == report["ticks"]
    assert isinstance(report["late_plans"], int)
    assert log.wall_s >= 0.8 * len(log.ticks) * log.frame_dt_s / 2.0  # the world ran at twice real time


def test_cli_starts_the_node_and_prints_the_pwm_sim_line(model_dir: Path, tmp_path: Path) -> None:
    from pwm_model.sim.planners import RunnerPlanner
    from pwm_model.sim.suite import run_suite

    local = RunnerPlanner(model_dir)
    ref = run_suite({"local": lambda: local}, [SEEDS[0]], local.config, seconds=6.0, progress=False)
    out = tmp_path / "sim"
    with own_domain():
        r = subprocess.run([sys.executable, "-m", "pwm_ros.sim", "--model", str(model_dir), "--start-node",
                            "--scenarios", "1", "--seed", str(SEEDS[0]), "--seconds", "6", "--out", str(out),
                            "--quiet"], capture_output=True, text=True, timeout=240, env=dict(os.environ))
    assert r.returncode == 0, r.stderr[-2000:]
    line = json.loads(r.stdout.strip().splitlines()[-1])
    assert line["transport"] == "ros2" and line["mode"] == "lock-step" and line["scenarios"] == 1
    assert abs(line["epdms"] - ref.summary("local")["epdms"]) <= 0.01
    metrics = json.loads((out / "metrics.json").read_text())
    assert sorted((i["kind"], i["t_s"]) for i in metrics["infractions"]) == sorted(
        (i.kind, round(i.t_s, 2)) for i in ref.scores["local"][0].infractions)


@pytest.mark.parametrize("frame_id, own_stamp, needle", [
    (None, False, "on /fake_planner/trajectory within 1 s of that camera frame"),
    ("map", False, "is in frame 'map', not base_link"),
    ("base_link", True, "answering no frame sent: stamp each Path with its camera frame's stamp"),
])
def test_a_bad_planner_ends_in_one_sentence(frame_id: str | None, own_stamp: bool, needle: str, tmp_path: Path,
                                            capsys) -> None:  # noqa: ANN001
    out = tmp_path / "sim"
    with _spun(_fake_planner("fake_planner", frame_id, own_stamp)):
        code = sim_main(["--preset", "tiny", "--node", "/fake_planner", "--timeout-s", "1", "--wait-s", "20",
                         "--scenarios", "1", "--seconds", "6", "--out", str(out), "--quiet"])
    err = capsys.readouterr().err
    errors = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert code == 2 and len(errors) == 1 and needle in errors[0], err
    assert ". " not in errors[0].rstrip(".") and not out.exists()
