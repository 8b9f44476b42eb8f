"""Baselines that PWM must beat: constant velocity, an ego-status MLP and the copy-last-frame forecast.

This module needs only numpy (the torch-free replay evaluation imports it).

- ``constant_velocity``: drive straight on at the current speed (NAVSIM's "constant velocity").
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
