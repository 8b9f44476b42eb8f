"""Baselines that PWM must beat: constant velocity, an ego-status MLP and the copy-last-frame forecast.

This module needs only numpy (the torch-free replay evaluation imports it).

- ``constant_velocity``: drive straight on at the current speed (NAVSIM's "constant velocity").
- ``kinematic``: extrapolate the ego state (speed, acceleration, yaw rate) with one of the classic motion models:
  ``cv`` (constant velocity), ``ca`` (constant acceleration), ``ctrv`` (constant turn rate and velocity) and
  ``ctra`` (constant turn rate and acceleration). Speeds stop at zero: a braking car halts, it does not reverse,
  and a halted car keeps its heading.
- ``EgoMLP`` (``pwm_model.eval.ego_mlp``, needs torch): an MLP from the ego status the world model also sees
  (speed, acceleration, command one-hot) to the K waypoints (NAVSIM's "Ego-MLP": no camera at all).
- ``copy_last_frame``: every future frame equals the current frame (images or tokens).
"""

from __future__ import annotations

import numpy as np


def constant_velocity(speed_mps: np.ndarray, num_waypoints: int, waypoint_dt_s: float) -> np.ndarray:
    """(N,) speeds -> (N, K, 3) waypoints straight ahead: x = v * k * dt, y = 0, yaw = 0."""
    t_s = np.arange(1, num_waypoints + 1) * waypoint_dt_s  # (K,)
    out = np.zeros((len(speed_mps), num_waypoints, 3), np.float32)
    out[:, :, 0] = np.asarray(speed_mps, np.float32)[:, None] * t_s[None]
    return out


def copy_last_frame(current: np.ndarray, frames: int) -> np.ndarray:
    """(N, ...) current frame (image or tokens) -> (N, F, ...) repeated for every forecast frame."""
    return np.repeat(np.asarray(current)[:, None], frames, axis=1)


KINEMATIC_MODELS = ("cv", "ca", "ctrv", "ctra")
_SUBSTEPS = 20  # integration steps per waypoint interval (midpoint rule; < 1 mm from the closed form at 3 s)


def kinematic(model: str, speed_mps: np.ndarray, accel_mps2: np.ndarray, yaw_rate_radps: np.ndarray,
              num_waypoints: int, waypoint_dt_s: float) -> np.ndarray:
    """(N,) ego state at t -> (N, K, 3) waypoints (x_m, y_m, yaw_rad) in base_link at t under ``model``.

    ``cv`` ignores acceleration and yaw rate, ``ca`` the yaw rate, ``ctrv`` the acceleration; ``ctra`` uses all.
    """
    if model not in KINEMATIC_MODELS:
        raise ValueError(f"unknown kinematic model {model!r}: choose one of {', '.join(KINEMATIC_MODELS)}")
    v0 = np.asarray(speed_mps, np.float64).reshape(-1)
    a = np.asarray(accel_mps2, np.float64).reshape(-1) if model in ("ca", "ctra") else np.zeros_like(v0)
    w = np.asarray(yaw_rate_radps, np.float64).reshape(-1) if model in ("ctrv", "ctra") else np.zeros_like(v0)
    dt = waypoint_dt_s / _SUBSTEPS
    t_mid = (np.arange(num_waypoints * _SUBSTEPS) + 0.5) * dt  # (S,) midpoints of the substeps
    speed = np.maximum(v0[:, None] + a[:, None] * t_mid[None], 0.0)  # (N, S)
    turning = w[:, None] * (speed > 0) * dt  # a stopped car does not turn on the spot
    yaw_end = np.cumsum(turning, axis=1)  # (N, S) heading at the end of each substep
    yaw = yaw_end - 0.5 * turning  # at its midpoint
    x = np.cumsum(speed * np.cos(yaw) * dt, axis=1)[:, _SUBSTEPS - 1::_SUBSTEPS]  # (N, K)
    y = np.cumsum(speed * np.sin(yaw) * dt, axis=1)[:, _SUBSTEPS - 1::_SUBSTEPS]
    return np.stack([x, y, yaw_end[:, _SUBSTEPS - 1::_SUBSTEPS]], axis=-1).astype(np.float32)
