"""Odometry samples -> the ego input at a camera stamp (plain Python, no rclpy).

The node keeps ``(t_ns, speed_mps, yaw_rate_radps)`` of each plausible odometry message (``twist.twist.linear.x``
and ``twist.twist.angular.z``); ``ego_at`` turns the newest into the ``EgoInput`` of a planning cycle.
"""

from __future__ import annotations

import math

from pwm_model.data.contract import (
    MAX_COMMAND_AGE_S,
    MAX_PLAUSIBLE_SPEED_MPS,
    MAX_PLAUSIBLE_YAW_RATE_RADPS,
    EgoInput,
)

ACCEL_BASELINE_S = 0.1  # odometry speed is differenced over at least this long for the acceleration

Sample = tuple[int, float, float]  # (t_ns, speed_mps, yaw_rate_radps)


def implausible(speed_mps: float, yaw_rate_radps: float, topic: str, ahead_s: float = 0.0,
                max_ahead_s: float = math.inf) -> tuple[str, str] | None:
    """``(warning kind, message)`` when an odometry message is a sensor fault, not a state to plan from; else None.

    ``ahead_s``: how far its stamp is ahead of the node's clock; more than ``max_ahead_s`` (the node passes
    ``odom_timeout_s``) and no camera frame the node would plan could use it.
    """
    if not (math.isfinite(speed_mps) and abs(speed_mps) <= MAX_PLAUSIBLE_SPEED_MPS):
        return "bad odometry", (f"odometry speed {speed_mps!r} m/s on {topic} is not a finite speed within "
                                f"{MAX_PLAUSIBLE_SPEED_MPS:g} m/s: ignored")
    if not (math.isfinite(yaw_rate_radps) and abs(yaw_rate_radps) <= MAX_PLAUSIBLE_YAW_RATE_RADPS):
        return "bad odometry yaw rate", (f"odometry yaw rate {yaw_rate_radps!r} rad/s on {topic} is not a finite "
                                         f"yaw rate within {MAX_PLAUSIBLE_YAW_RATE_RADPS:g} rad/s: ignored")
    if not ahead_s <= max_ahead_s:
        return "bad odometry stamp", (f"odometry on {topic} stamped {ahead_s:.3f} s ahead of this node's clock "
                                      f"(more than odom_timeout_s {max_ahead_s:g} s): ignored; is the odometry "
                                      "clock ahead of this node's?")
    return None


def ego_at(odom: list[Sample], stamp_ns: int, command: int, timeout_s: float,
           command_age_s: float = MAX_COMMAND_AGE_S) -> tuple[EgoInput, float]:
    """Ego input at the camera stamp and the odometry age in ms (NaN without odometry).

    Odometry older (or newer) than ``timeout_s`` against the stamp gives speed, acceleration and yaw rate 0; the
    acceleration is the speed differenced over at least ``ACCEL_BASELINE_S`` (0 until that much odometry is there).
    """
    if not odom:
        return EgoInput(0.0, 0.0, command, command_age_s=command_age_s), float("nan")
    t_ns, speed, yaw_rate = odom[-1]
    age_ms = (stamp_ns - t_ns) / 1e6
    if abs(age_ms) > 1000.0 * timeout_s:
        return EgoInput(0.0, 0.0, command, command_age_s=command_age_s), age_ms
    accel = 0.0
    for t0_ns, v0, _ in reversed(odom[:-1]):
        if t_ns - t0_ns >= ACCEL_BASELINE_S * 1e9:
            accel = (speed - v0) / ((t_ns - t0_ns) / 1e9)
            break
    return EgoInput(speed, accel, command, yaw_rate, command_age_s), age_ms
