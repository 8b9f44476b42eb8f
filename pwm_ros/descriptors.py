"""The ROS parameter descriptors of ``pwm_node``, built from ``params.SPECS`` (description, range, choices, when a
change takes effect)."""

from __future__ import annotations

from typing import Any

from rcl_interfaces.msg import FloatingPointRange, IntegerRange, ParameterDescriptor

from pwm_ros import params


def descriptor(name: str, default: Any) -> ParameterDescriptor:
    """The descriptor of parameter ``name`` whose default is ``default``."""
    spec = params.SPECS[name]
    constraints = [f"applies: {spec.applies}"]
    if spec.choices:
        constraints.append("one of " + ", ".join(spec.choices))
    d = ParameterDescriptor(description=spec.description)
    if spec.range is not None and isinstance(default, float):
        d.floating_point_range = [FloatingPointRange(from_value=float(spec.range[0]), to_value=float(spec.range[1]),
                                                     step=0.0)]
    elif spec.range is not None and isinstance(default, int) and not isinstance(default, bool):
        d.integer_range = [IntegerRange(from_value=int(spec.range[0]), to_value=int(spec.range[1]), step=1)]
    if isinstance(default, float):
        d.dynamic_typing = True  # accept `10` for `10.0` from YAML / the command line; checked in params.py
    d.additional_constraints = "; ".join(constraints)
    return d
