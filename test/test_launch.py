"""launch_testing test of launch/pwm.launch.py: the node comes up active by itself and plans from camera frames.

Needs a ROS 2 install with launch_testing (the Docker image's ``test`` target, or a sourced workspace where
``pwm_ros`` is built with colcon); skips with the reason elsewhere. Run it with ``pytest test/test_launch.py`` or
``launch_test test/test_launch.py``.
"""

from __future__ import annotations

import time
import unittest
from pathlib import Path

import pytest

pytest.importorskip(
    "launch_testing", reason="launch_testing is not installed here: it comes with a ROS 2 install "
                             "(ros-$ROS_DISTRO-launch-testing-ros) and runs in the Docker image's test target")
pytest.importorskip("launch_ros", reason="launch_ros is not installed here (comes with a ROS 2 install)")

import launch  # noqa: E402
import launch_testing.actions  # noqa: E402
import launch_testing.asserts  # noqa: E402
import numpy as np  # noqa: E402
import rclpy  # noqa: E402
from launch.launch_description_sources import PythonLaunchDescriptionSource  # noqa: E402
from nav_msgs.msg import Path as PathMsg  # noqa: E402
from sensor_msgs.msg import Image  # noqa: E402

from pwm_ros import conversions  # noqa: E402

from .model_utils import tiny_model_dir  # noqa: E402
from .ros_utils import DRIVER_QOS, Probe, wait_for  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
CAMERA_TOPIC = "/launch_test/camera/image_raw"


@pytest.mark.launch_test
def generate_test_description() -> tuple[launch.LaunchDescription, dict]:
    model_dir = tiny_model_dir()
    include = launch.actions.IncludeLaunchDescription(
        PythonLaunchDescriptionSource(str(REPO_ROOT / "launch" / "pwm.launch.py")),
        launch_arguments={"model_dir": str(model_dir), "camera_topic": CAMERA_TOPIC,
                          "params_file": str(REPO_ROOT / "config" / "pwm.yaml"), "log_level": "info"}.items())
    return launch.LaunchDescription([include, launch_testing.actions.ReadyToTest()]), {"model_dir": model_dir}


class TestNodeComesUpAndPlans(unittest.TestCase):
    @classmethod
    def setUpClass(cls) -> None:
        rclpy.init()
        cls.probe = Probe("launch_probe")

    @classmethod
    def tearDownClass(cls) -> None:
        cls.probe.destroy_node()
        rclpy.shutdown()

    def _spin_until(self, cond, timeout_s: float) -> bool:  # noqa: ANN001
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            rclpy.spin_once(self.probe, timeout_sec=0.05)
            if cond():
                return True
        return bool(cond())

    def test_node_activates_and_publishes_a_path(self, proc_output) -> None:  # noqa: ANN001
        from lifecycle_msgs.srv import GetState

        client = self.probe.create_client(GetState, "/pwm_node/get_state")
        self.assertTrue(client.wait_for_service(timeout_sec=60.0), "the lifecycle node never appeared")
        state = {"label": ""}

        def active() -> bool:
            future = client.call_async(GetState.Request())
            self._spin_until(future.done, 5.0)
            state["label"] = future.result().current_state.label if future.done() else ""
            return state["label"] == "active"

        self.assertTrue(wait_for(active, 120.0, 0.5), f"node is {state['label']!r}, not active")
        paths: list = []
        self.probe.create_subscription(PathMsg, "/pwm_node/trajectory", paths.append, DRIVER_QOS)
        pub = self.probe.create_publisher(Image, CAMERA_TOPIC, DRIVER_QOS)
        rgb = np.random.default_rng(0).integers(0, 255, (128, 256, 3), dtype=np.uint8)
        sent = []
        for _ in range(30):
            t_ns = self.probe.get_clock().now().nanoseconds
            pub.publish(conversions.rgb_to_image(rgb, t_ns, "camera"))
            sent.append(t_ns)
            if self._spin_until(lambda: paths, 0.2):
                break
        self.assertTrue(paths, "no Path on /pwm_node/trajectory")
        self.assertEqual(paths[0].header.frame_id, "base_link")
        self.assertIn(conversions.stamp_to_ns(paths[0].header.stamp), sent)
        proc_output.assertWaitFor("active:", timeout=10)


@launch_testing.post_shutdown_test()
class TestShutdown(unittest.TestCase):
    def test_exit_code(self, proc_info) -> None:  # noqa: ANN001
        launch_testing.asserts.assertExitCodes(proc_info, allowable_exit_codes=[0, -2, -15])
