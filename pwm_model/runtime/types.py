"""Plain data exchanged with the runtime: what goes into a planning cycle (``EgoInput``, and ``CommandAge`` for its
command's age, both defined with the ego vector in ``pwm_model/data/contract.py``) and the Plan that comes out.

No torch, no ROS. The ROS node turns a ``Plan`` into messages; the bag evaluator turns Plans into metrics.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from pwm_model.data.contract import CommandAge, EgoInput

__all__ = ["CommandAge", "EgoInput", "Engine", "Plan"]


@dataclass
class Plan:
    """The result of one planning cycle for the camera frame stamped ``t_ns``."""

    t_ns: int  # camera stamp of the frame this plan was computed from
    waypoints_xyyaw: np.ndarray  # (K, 3) float32: x, y (m) and yaw (rad) in base_link at t_ns
    waypoint_t_ns: np.ndarray  # (K,) int64: stamp of each waypoint (t_ns + k * waypoint_dt)
    forecast_tokens: np.ndarray  # (F, Ld) int64: forecast dyn codes of frames t+1 .. t+F
    surprise: float = float("nan")  # NLL of this frame's codes under the last forecast (nats/token); NaN if none
    novelty: float = float("nan")  # how unlike the training drives the frame looks (runtime/novelty.py); NaN: no prior
    novelty_code_nll: float = float("nan")  # its parts: the ctx codes' NLL under the training frequencies (nats/token)
    novelty_reconstruction: float = float("nan")  # and the ctx reconstruction error (NaN without ctx_decoder)
    timings_ms: dict[str, float] = field(default_factory=dict)  # per stage, plus "total"
    warming_up: bool = False  # True while the history buffer is not yet full (the plan is less informed)
    ctx_tokens: np.ndarray | None = None  # (Lc,) int64 ctx codes of frame t_ns: what preview() decodes against


class Engine(Protocol):
    """One inference graph behind a backend (onnxruntime, tensorrt, torch): named arrays in, named arrays out."""

    name: str

    def run(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        ...
