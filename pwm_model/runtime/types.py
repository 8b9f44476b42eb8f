"""Plain data exchanged with the runtime: what goes into a planning cycle and the Plan that comes out.

No torch, no ROS. The ROS node turns a ``Plan`` into messages; the bag evaluator turns Plans into metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pwm_model.data.schema import COMMAND_STRAIGHT


@dataclass
class EgoInput:
    """Ego state at the camera stamp (from odometry when available) and the route command."""

    speed_mps: float = 0.0
    accel_mps2: float = 0.0
    command: int = COMMAND_STRAIGHT  # 0 left, 1 straight, 2 right

    def as_vector(self) -> np.ndarray:
        """The world model's ego input: ``[speed_mps, accel_mps2, one_hot(command, 3)]`` as float32 (5,)."""
        v = np.zeros(5, np.float32)
        v[0], v[1] = self.speed_mps, self.accel_mps2
        v[2 + int(self.command)] = 1.0
        return v


@dataclass
class Plan:
    """The result of one planning cycle for the camera frame stamped ``t_ns``."""

    t_ns: int  # camera stamp of the frame this plan was computed from
    waypoints_xyyaw: np.ndarray  # (K, 3) float32: x, y (m) and yaw (rad) in base_link at t_ns
    waypoint_t_ns: np.ndarray  # (K,) int64: stamp of each waypoint (t_ns + k * waypoint_dt)
    forecast_tokens: np.ndarray  # (F, Ld) int64: forecast dyn codes of frames t+1 .. t+F
    surprise: float = float("nan")  # weighted mismatch of this frame vs the last forecast; NaN if none
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage, plus "total"
    warming_up: bool = False  # True while the history buffer is not yet full (the plan is less informed)
    ctx_tokens: np.ndarray | None = None  # (Lc,) int64 ctx codes of frame t_ns: what preview() decodes against


class Engine(Protocol):
    """One inference graph behind a backend (onnxruntime, tensorrt, torch): named arrays in, named arrays out."""

    name: str

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ...
