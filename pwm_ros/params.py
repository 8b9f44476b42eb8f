"""Parameters of ``pwm_node``: defaults, descriptions, ranges and validation, written once.

Two dataclasses give every default: ``RuntimeConfig`` (``pwm_model/config.py``: backend, rates, limits, shared with
the offline tools) and ``NodeParams`` below (topics, QoS, frames: the ROS side only). ``SPECS`` adds what a default
cannot say: a description, the valid range or choices, and when a change takes effect. The node declares its
parameters from these, ``config/pwm.yaml`` is checked against them by a test, and the parameter table in
``docs/ROBOT.md`` is generated from them (``python -m pwm_ros.params --markdown``).

No rclpy here: the node turns ``SPECS`` into ``ParameterDescriptor``s.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from dataclasses import dataclass
from typing import Any

from pwm_model.config import RUNTIME_CHOICES, RUNTIME_RANGES, RuntimeConfig, TopicsConfig
from pwm_model.data.schema import COMMAND_STRAIGHT
from pwm_model.errors import ConfigError

NODE_NAME = "pwm_node"
RELIABILITIES = ("best_effort", "reliable")

# When a changed value takes effect.
NOW, ON_ACTIVATE, ON_CONFIGURE = "now", "next activate", "next configure"


@dataclass
class NodeParams:
    """The ROS side of the node: topics, QoS, frames and monitoring (runtime settings live in RuntimeConfig)."""

    model_dir: str = ""  # model directory (manifest.json + graphs); required, checked on configure
    camera_topic: str = TopicsConfig.image  # base camera topic; with use_compressed, <camera_topic>/compressed
    use_compressed: bool = False  # subscribe to sensor_msgs/CompressedImage (JPEG/PNG) instead of Image
    camera_reliability: str = "best_effort"  # SensorData QoS (REP-2003); reliable only if the driver needs it
    camera_depth: int = 5  # SensorData keep-last depth; the node itself keeps only the latest frame
    odom_topic: str = TopicsConfig.odometry  # nav_msgs/Odometry for ego speed / acceleration / yaw rate (optional)
    command_topic: str = TopicsConfig.command  # std_msgs/UInt8 route command: 0 left, 1 straight, 2 right
    default_command: int = COMMAND_STRAIGHT  # route command until one arrives
    base_frame: str = "base_link"  # frame of the planned path (REP-103 ego frame)
    odom_timeout_s: float = 0.5  # odometry older than this (vs. the camera stamp) counts as missing
    camera_timeout_s: float = 1.0  # no camera frame for this long while active: WARN in diagnostics
    diagnostics_period_s: float = 1.0  # /diagnostics publishing period


@dataclass(frozen=True)
class Spec:
    """What the default cannot say about a parameter."""

    description: str
    applies: str = NOW  # NOW | ON_ACTIVATE | ON_CONFIGURE
    choices: tuple[str, ...] = ()  # valid strings (empty: any)
    range: tuple[float, float] | None = None  # inclusive [from, to] for numbers
    topic: bool = False  # must be a valid absolute or relative topic name


SPECS: dict[str, Spec] = {
    # NodeParams
    "model_dir": Spec("model directory: manifest.json + ONNX graphs (and engines/ for TensorRT)", ON_CONFIGURE),
    "camera_topic": Spec("camera topic (sensor_msgs/Image); with use_compressed its /compressed sub-topic "
                         "(image_transport naming) unless it already ends in /compressed", ON_ACTIVATE, topic=True),
    "use_compressed": Spec("subscribe to sensor_msgs/CompressedImage (JPEG/PNG) instead of raw Image",
                           ON_ACTIVATE),
    "camera_reliability": Spec("camera subscription reliability; best_effort (SensorData) matches both best-effort "
                               "and reliable publishers", ON_ACTIVATE, choices=RELIABILITIES),
    "camera_depth": Spec("camera subscription keep-last depth", ON_ACTIVATE, range=(1, 100)),
    "odom_topic": Spec("nav_msgs/Odometry for ego speed, acceleration and yaw rate; empty: no odometry (all 0)",
                       ON_ACTIVATE, topic=True),
    "command_topic": Spec("std_msgs/UInt8 route command (0 left, 1 straight, 2 right); empty: default_command only",
                          ON_ACTIVATE, topic=True),
    "default_command": Spec("route command until a command message arrives (0 left, 1 straight, 2 right)",
                            range=(0, 2)),
    "base_frame": Spec("frame_id of the planned path and markers (the ego frame)"),
    "odom_timeout_s": Spec("odometry older than this against the camera stamp is ignored (WARN)",
                           range=(0.01, 10.0)),
    "camera_timeout_s": Spec("no camera frame for this long while active raises a WARN", range=(0.1, 60.0)),
    "diagnostics_period_s": Spec("/diagnostics publishing period", range=(0.1, 60.0)),
    # RuntimeConfig: choices and ranges from pwm_model.config (RUNTIME_CHOICES, RUNTIME_RANGES)
    "backend": Spec("inference backend", ON_CONFIGURE, choices=RUNTIME_CHOICES["backend"]),
    "device": Spec("onnxruntime provider / torch device", ON_CONFIGURE, choices=RUNTIME_CHOICES["device"]),
    "precision": Spec("engine precision (TensorRT fp32/fp16/int8; with onnxruntime, int8 runs the Q/DQ graphs of "
                      "build_engine.py --precision int8)", ON_CONFIGURE, choices=RUNTIME_CHOICES["precision"]),
    "planning_rate_hz": Spec("at most this many plans per second (latest frame only)",
                             range=RUNTIME_RANGES["planning_rate_hz"]),
    "max_frame_age_ms": Spec("frames older than this when inference would start, or stamped this far in the future, "
                             "are skipped",
                             range=RUNTIME_RANGES["max_frame_age_ms"]),
    "preview_rate_hz": Spec("forecast / overlay images per second at most (only while subscribed)",
                            range=RUNTIME_RANGES["preview_rate_hz"]),
    "surprise_warn": Spec("forecast surprise above this raises a WARN in diagnostics; negative: the model's "
                          "calibrated threshold (manifest.json surprise_calibration, none without one)",
                          range=RUNTIME_RANGES["surprise_warn"]),
    "novelty_warn": Spec("scene novelty (how unlike the training drives a frame looks) above this raises a WARN in "
                         "diagnostics; negative: the model's calibrated threshold (manifest.json "
                         "novelty_calibration, none without one)", range=RUNTIME_RANGES["novelty_warn"]),
    "intra_op_threads": Spec("onnxruntime intra-op threads; 0 = library default", ON_CONFIGURE,
                             range=RUNTIME_RANGES["intra_op_threads"]),
}


def defaults() -> dict[str, Any]:
    """Every parameter's default, node parameters first, in declaration order."""
    out = dataclasses.asdict(NodeParams())
    clash = set(out) & {f.name for f in dataclasses.fields(RuntimeConfig)}
    if clash:  # pragma: no cover - a programming error caught by the tests
        raise ConfigError(f"parameter names defined twice: {', '.join(sorted(clash))}")
    out.update(dataclasses.asdict(RuntimeConfig()))
    return out


def _check_topic(name: str, value: str) -> str | None:
    if value == "" and name in ("odom_topic", "command_topic"):
        return None
    bad = not value or " " in value or "//" in value or value.endswith("/") or any(
        not (c.isalnum() or c in "_/~{}") for c in value)
    if bad or value[0].isdigit():
        return f"{name} {value!r} is not a valid topic name (letters, digits, _ and /, e.g. /camera/front/image_raw)"
    return None


def keep_float(name: str, value: Any) -> Any:
    """An integer given for a float parameter, as a float; every other value as it is."""
    return float(value) if isinstance(defaults().get(name), float) and type(value) is int else value


def check_value(name: str, value: Any) -> str | None:
    """``None`` if ``value`` is valid for parameter ``name``, else one sentence saying why not."""
    spec = SPECS.get(name)
    if spec is None:
        return f"unknown parameter {name!r}"
    default = defaults()[name]
    if isinstance(default, bool):
        if not isinstance(value, bool):
            return f"{name} must be true or false, got {value!r}"
        return None
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return f"{name} must be a number, got {value!r}"
        if isinstance(default, int) and not isinstance(value, int):
            return f"{name} must be an integer, got {value!r}"
        if value != value or value in (float("inf"), float("-inf")):
            return f"{name} must be finite, got {value!r}"
        if spec.range is not None and not spec.range[0] <= value <= spec.range[1]:
            return f"{name} must be within [{spec.range[0]:g}, {spec.range[1]:g}], got {value!r}"
        return None
    if not isinstance(value, str):
        return f"{name} must be a string, got {value!r}"
    if spec.choices and value not in spec.choices:
        return f"{name} must be one of {', '.join(spec.choices)}, got {value!r}"
    if spec.topic:
        return _check_topic(name, value)
    if name == "base_frame" and (not value or " " in value or value.startswith("/")):
        return f"base_frame must be a non-empty frame id without spaces or a leading /, got {value!r}"
    return None


def split(values: dict[str, Any]) -> tuple[NodeParams, RuntimeConfig]:
    """Build and validate both dataclasses from a full set of parameter values; raises ``ConfigError``."""
    for name, value in values.items():
        why = check_value(name, value)
        if why:
            raise ConfigError(why)
    node_names = {f.name for f in dataclasses.fields(NodeParams)}
    node = NodeParams(**{k: v for k, v in values.items() if k in node_names})
    runtime = RuntimeConfig(**{k: (float(v) if isinstance(getattr(RuntimeConfig, k, None), float) else v)
                               for k, v in values.items() if k not in node_names})
    runtime.validate("runtime")
    return node, runtime


def camera_subscription_topic(node: NodeParams) -> str:
    """The topic the camera subscription uses (image_transport naming for the compressed transport)."""
    topic = node.camera_topic
    if node.use_compressed and not topic.rstrip("/").endswith("/compressed"):
        return topic.rstrip("/") + "/compressed"
    return topic


# ----------------------------------------------------------------------------------------------------
# Generated text: config/pwm.yaml and the docs table.

def _yaml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return f'"{value}"' if value == "" or value[0] in "/~{" or ":" in value else value
    return repr(value)


def yaml_text(node_name: str = "/**") -> str:
    """``config/pwm.yaml``: every parameter with its default and a one-line description (any node name, namespace)."""
    lines = ["# Parameters of pwm_node with every default (generated: python -m pwm_ros.params --yaml).",
             "# A changed value takes effect as the comment says; see docs/ROBOT.md.",
             f'"{node_name}":', "  ros__parameters:"]
    for name, value in defaults().items():
        spec = SPECS[name]
        lines.append(f"    # {spec.description} [applies: {spec.applies}]")
        lines.append(f"    {name}: {_yaml_value(value)}")
    return "\n".join(lines) + "\n"


def markdown_table() -> str:
    """The parameter table of docs/ROBOT.md."""
    rows = ["| parameter | default | valid | applies | description |", "|---|---|---|---|---|"]
    for name, value in defaults().items():
        spec = SPECS[name]
        if spec.choices:
            valid = " \\| ".join(spec.choices)
        elif spec.range is not None:
            valid = f"{spec.range[0]:g} .. {spec.range[1]:g}"
        elif spec.topic:
            valid = "topic name"
        else:
            valid = type(value).__name__
        default = _yaml_value(value) if value != "" else '""'
        rows.append(f"| `{name}` | `{default}` | {valid} | {spec.applies} | {spec.description} |")
    return "\n".join(rows) + "\n"


def merge_now(old: Any, new: Any) -> Any:
    """``old`` with the fields whose changes apply now taken from ``new`` (the rest wait for a transition)."""
    out = type(old)(**vars(old))
    for key, value in vars(new).items():
        if SPECS.get(key) is not None and SPECS[key].applies == NOW:
            setattr(out, key, value)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pwm_ros.params", description=__doc__.splitlines()[0])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--yaml", action="store_true", help="print config/pwm.yaml")
    group.add_argument("--markdown", action="store_true", help="print the parameter table of docs/ROBOT.md")
    args = parser.parse_args(argv)
    sys.stdout.write(yaml_text() if args.yaml else markdown_table())
    return 0


if __name__ == "__main__":
    sys.exit(main())
