"""Kinematic priors of the waypoint head: the plan is ``head + prior(ego)`` (``world_model.prior``).

- ``cv``: drive straight on at the current speed (x = v t_k).
- ``ctra``: constant turn rate and acceleration from the ego state's speed, acceleration and yaw rate, integrated
  exactly as ``pwm_model.eval.baselines.kinematic("ctra")`` integrates it (midpoint rule, speeds stop at zero and a
  stopped car keeps its heading), in tensor operations that export to ONNX. With a zero head the plan *is* the CTRA
  baseline, so what the head learns is the correction to physics.
"""

from __future__ import annotations

import torch

PRIORS = ("none", "cv", "ctra")
SUBSTEPS = 20  # integration steps per waypoint interval (as the numpy baseline)
SPEED, ACCEL, YAW_RATE = 0, 1, 5  # indices in the ego vector (pwm_model.data.contract)


def kinematic_prior(kind: str, ego: torch.Tensor, waypoint_t_s: torch.Tensor) -> torch.Tensor:
    """Ego vectors (B, EGO_DIM) -> prior waypoints (B, K, 3) (x_m, y_m, yaw_rad) at times ``waypoint_t_s`` (K,).

    ``waypoint_t_s`` must be evenly spaced from its first value (k * dt).
    """
    b, k = ego.shape[0], waypoint_t_s.shape[0]
    v0 = ego[:, SPEED:SPEED + 1].float()  # (B, 1)
    if kind == "cv":
        x_m = v0.clamp_min(0.0) * waypoint_t_s[None]
        zeros = torch.zeros_like(x_m)
        return torch.stack([x_m, zeros, zeros], dim=-1)
    if kind != "ctra":
        raise ValueError(f"unknown prior {kind!r}: choose one of {', '.join(PRIORS)}")
    accel = ego[:, ACCEL:ACCEL + 1].float()
    yaw_rate = ego[:, YAW_RATE:YAW_RATE + 1].float() if ego.shape[1] > YAW_RATE else torch.zeros_like(v0)
    dt = waypoint_t_s[0] / SUBSTEPS
    t_mid = (torch.arange(k * SUBSTEPS, device=ego.device, dtype=torch.float32) + 0.5) * dt  # (S,)
    speed = (v0 + accel * t_mid[None]).clamp_min(0.0)  # (B, S)
    turning = yaw_rate * (speed > 0).float() * dt  # a stopped car does not turn on the spot
    yaw_end = torch.cumsum(turning, dim=1)
    yaw = yaw_end - 0.5 * turning
    x = torch.cumsum(speed * torch.cos(yaw) * dt, dim=1).view(b, k, SUBSTEPS)[:, :, -1]  # (B, K)
    y = torch.cumsum(speed * torch.sin(yaw) * dt, dim=1).view(b, k, SUBSTEPS)[:, :, -1]
    return torch.stack([x, y, yaw_end.view(b, k, SUBSTEPS)[:, :, -1]], dim=-1)
