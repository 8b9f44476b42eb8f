"""Node parameters: every default written once, config/pwm.yaml and the docs table generated from it, ranges and
validation on change (over the real parameter services)."""

from __future__ import annotations

import ast
import dataclasses
import os
import subprocess
import sys

import pytest
import yaml

from pwm_model.config import RuntimeConfig
from pwm_ros import params

from .conftest import REPO_ROOT


def test_config_yaml_holds_every_default_once() -> None:
    text = (REPO_ROOT / "config" / "pwm.yaml").read_text()
    assert text == params.yaml_text(), "config/pwm.yaml is stale: python -m pwm_ros.params --yaml > config/pwm.yaml"
    data = yaml.safe_load(text)
    (section,) = data.values()
    assert section["ros__parameters"] == params.defaults()


def test_every_parameter_has_a_spec_and_comes_from_a_dataclass() -> None:
    fields = [f.name for f in dataclasses.fields(params.NodeParams)] + [f.name for f in
                                                                       dataclasses.fields(RuntimeConfig)]
    assert len(fields) == len(set(fields))
    assert set(params.SPECS) == set(fields) == set(params.defaults())
    for name, value in params.defaults().items():
        assert params.check_value(name, value) is None, name  # every default is valid


def test_docs_table_is_generated_from_the_specs() -> None:
    robot = (REPO_ROOT / "docs" / "ROBOT.md").read_text()
    assert params.markdown_table() in robot, "docs/ROBOT.md parameters are stale: python -m pwm_ros.params --markdown"


@pytest.mark.parametrize(("name", "value", "reason"), [
    ("planning_rate_hz", 0.0, "within"),
    ("planning_rate_hz", "fast", "number"),
    ("camera_depth", 0, "within"),
    ("camera_depth", 2.5, "integer"),
    ("backend", "cuda", "one of"),
    ("camera_reliability", "sometimes", "one of"),
    ("camera_topic", "/cam era", "topic name"),
    ("camera_topic", "", "topic name"),
    ("use_compressed", "yes", "true or false"),
    ("max_frame_age_ms", float("nan"), "finite"),
    ("base_frame", "/base_link", "frame id"),
    ("no_such_parameter", 1, "unknown"),
])
def test_bad_values_are_rejected_with_a_reason(name: str, value: object, reason: str) -> None:
    why = params.check_value(name, value)
    assert why is not None and reason in why and (name in why or name == "no_such_parameter")


def test_topics_may_be_empty_where_optional_and_compressed_follows_image_transport() -> None:
    assert params.check_value("odom_topic", "") is None
    assert params.check_value("command_topic", "~/command") is None
    node = params.NodeParams(camera_topic="/cam/image_raw", use_compressed=True)
    assert params.camera_subscription_topic(node) == "/cam/image_raw/compressed"
    node.camera_topic = "/cam/image_raw/compressed"
    assert params.camera_subscription_topic(node) == "/cam/image_raw/compressed"
    node.use_compressed = False
    node.camera_topic = "/cam/image_raw"
    assert params.camera_subscription_topic(node) == "/cam/image_raw"


def test_split_builds_both_configs() -> None:
    values = params.defaults() | {"planning_rate_hz": 5, "camera_depth": 1}
    node, runtime = params.split(values)
    assert runtime.planning_rate_hz == 5.0 and isinstance(runtime.planning_rate_hz, float)
    assert node.camera_depth == 1


def _launch_constant(name: str) -> object:
    """A module-level constant of launch/pwm.launch.py, read without importing `launch` (not installed here)."""
    tree = ast.parse((REPO_ROOT / "launch" / "pwm.launch.py").read_text())
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and any(getattr(t, "id", None) == name for t in stmt.targets):
            return ast.literal_eval(stmt.value)
    raise AssertionError(f"launch/pwm.launch.py has no {name}")


def test_launch_arguments_cover_the_issue_and_override_real_parameters() -> None:
    arguments = _launch_constant("ARGUMENTS")
    for name in ("model_dir", "backend", "camera_topic", "use_compressed", "params_file", "namespace",
                 "use_sim_time", "log_level", "autostart"):
        assert name in arguments and arguments[name][1], name
    overrides = _launch_constant("OVERRIDES")
    assert set(overrides) <= set(params.SPECS)  # each argument overrides a declared parameter
    assert all(arguments[name][0] == "" for name in overrides)  # empty: the params file keeps the one default


# ----------------------------------------------------------------------------------------------------
# On a live node, through the parameter services.

rclpy = pytest.importorskip("rclpy", reason="rclpy is not installed (pip install -e .[ros])")


def test_live_node_declares_described_parameters_and_validates_changes() -> None:
    from pwm_ros.node import PwmNode

    from .ros_utils import Probe, spinning

    with spinning(PwmNode, Probe) as (_, (node, probe)):
        declared = {name for name in node._parameters}  # noqa: SLF001 - the declared set
        assert set(params.SPECS) | {"autostart", "use_sim_time"} <= declared
        rate = node.describe_parameter("planning_rate_hz")
        assert rate.floating_point_range[0].to_value == params.SPECS["planning_rate_hz"].range[1]
        assert "applies: now" in rate.additional_constraints and rate.description
        depth = node.describe_parameter("camera_depth")
        assert depth.integer_range[0].from_value == 1
        result = probe.set_parameter("/pwm_node", "planning_rate_hz", 500.0)
        assert not result.successful and "planning_rate_hz" in result.reason and "range" in result.reason
        result = probe.set_parameter("/pwm_node", "backend", "cuda")
        assert not result.successful and "onnxruntime" in result.reason
        result = probe.set_parameter("/pwm_node", "camera_topic", "not a topic")
        assert not result.successful and "topic name" in result.reason
        result = probe.set_parameter("/pwm_node", "planning_rate_hz", 4)  # an integer is fine for a float
        assert result.successful, result.reason
        assert node.get_parameter("planning_rate_hz").value == 4
        if hasattr(node, "add_pre_set_parameters_callback"):  # Iron and later: the parameter stays a float
            assert isinstance(node.get_parameter("planning_rate_hz").value, float)
        assert node._rt.planning_rate_hz == 4.0  # noqa: SLF001 - applies now
        result = probe.set_parameter("/pwm_node", "camera_depth", 3)
        assert result.successful
        assert node._cfg.camera_depth == 5  # noqa: SLF001 - applies on the next activate


def test_bad_params_file_exits_with_one_sentence(tmp_path) -> None:  # noqa: ANN001
    bad = tmp_path / "bad.yaml"
    bad.write_text('"/**":\n  ros__parameters:\n    backend: cuda\n')
    proc = subprocess.run([sys.executable, "-m", "pwm_ros.node", "--ros-args", "--params-file", str(bad)],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert proc.returncode == 2, proc.stderr
    assert "error: backend must be one of onnxruntime, tensorrt, torch" in proc.stderr
    bad.write_text('"/**":\n  ros__parameters:\n    planning_rate_hz: 1000.0\n')
    proc = subprocess.run([sys.executable, "-m", "pwm_ros.node", "--ros-args", "--params-file", str(bad)],
                          capture_output=True, text=True, timeout=60, env=dict(os.environ))
    assert proc.returncode == 2 and "planning_rate_hz" in proc.stderr, proc.stderr


def test_faults_differing_only_in_numbers_are_one_kind_for_the_warn_once_guard():
    from pwm_model.errors import DataError
    from pwm_ros.diagnostics import fault_kind

    a = DataError("rgb8 image of 640x480 px needs 921600 bytes, the message holds 12 (step 1920)")
    b = DataError("rgb8 image of 1280x720 px needs 2764800 bytes, the message holds 7 (step 3840)")
    assert fault_kind(a) == fault_kind(b)
    assert fault_kind(a) != fault_kind(DataError("image encoding 'yuv9' is not supported"))
    assert fault_kind(a) != fault_kind(ValueError(str(a)))
