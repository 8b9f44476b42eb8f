"""Launch the pwm planning node as a lifecycle node that configures and activates itself.

    ros2 launch pwm_ros pwm.launch.py model_dir:=/path/to/model camera_topic:=/my/camera/image_raw
    ros2 launch pwm_ros pwm.launch.py model_dir:=/models/pwm use_compressed:=true use_sim_time:=true

Parameters come from ``params_file`` (default: the package's config/pwm.yaml, every default); the arguments
below override single values. With ``autostart:=false`` the node waits in ``unconfigured`` for
``ros2 lifecycle set /pwm_node configure`` (or a lifecycle manager).
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchContext, LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, OpaqueFunction, RegisterEventHandler
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from lifecycle_msgs.msg import Transition

# argument -> (default, description); an empty default keeps the value of params_file
ARGUMENTS = {
    "model_dir": ("", "model directory (manifest.json + ONNX graphs / engines); empty = the value in params_file"),
    "backend": ("", "inference backend: onnxruntime | tensorrt | torch; empty = the value in params_file"),
    "camera_topic": ("", "camera topic (sensor_msgs/Image); with use_compressed its /compressed sub-topic is used; "
                         "empty = the value in params_file"),
    "use_compressed": ("", "true: subscribe to sensor_msgs/CompressedImage; empty = the value in params_file"),
    "params_file": ("", "parameters YAML; empty = the package's config/pwm.yaml"),
    "namespace": ("", "namespace of the node (its outputs become /<namespace>/pwm_node/...)"),
    "use_sim_time": ("false", "follow /clock (bag replay, simulators)"),
    "log_level": ("info", "log level: debug | info | warn | error"),
    "autostart": ("true", "configure and activate the lifecycle node automatically"),
}
# launch argument -> node parameter it overrides when not empty
OVERRIDES = ("model_dir", "backend", "camera_topic", "use_compressed")


def _as_bool(text: str) -> bool:
    return text.strip().lower() in ("1", "true", "yes", "on")


def _launch_setup(context: LaunchContext) -> list:
    arg = {name: LaunchConfiguration(name).perform(context) for name in ARGUMENTS}
    params_file = arg["params_file"] or os.path.join(get_package_share_directory("pwm_ros"), "config", "pwm.yaml")
    overrides: dict = {"use_sim_time": _as_bool(arg["use_sim_time"])}
    for name in OVERRIDES:
        if arg[name]:
            overrides[name] = _as_bool(arg[name]) if name == "use_compressed" else arg[name]
    node = LifecycleNode(
        package="pwm_ros",
        executable="pwm_node",
        name="pwm_node",
        namespace=arg["namespace"],
        output="screen",
        parameters=[params_file, overrides],
        arguments=["--ros-args", "--log-level", arg["log_level"]],
    )
    if not _as_bool(arg["autostart"]):
        return [node]
    change = lambda transition: EmitEvent(event=ChangeState(  # noqa: E731
        lifecycle_node_matcher=matches_action(node), transition_id=transition))
    # Activate once configuring succeeded (only then: a later manual deactivate stays deactivated).
    activate_when_configured = RegisterEventHandler(OnStateTransition(
        target_lifecycle_node=node, start_state="configuring", goal_state="inactive",
        entities=[change(Transition.TRANSITION_ACTIVATE)]))
    return [node, activate_when_configured, change(Transition.TRANSITION_CONFIGURE)]


def generate_launch_description() -> LaunchDescription:
    args = [DeclareLaunchArgument(name, default_value=default, description=desc)
            for name, (default, desc) in ARGUMENTS.items()]
    return LaunchDescription([*args, OpaqueFunction(function=_launch_setup)])
