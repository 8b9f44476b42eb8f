"""Planners the closed loop can drive with, all behind one call: ``step(frame_rgb, t_ns, ego) -> (K, 3) waypoints``
(x_m, y_m, yaw_rad in base_link at ``t_ns``, every ``waypoint_dt_s``), the call ``PolicyRunner.step`` makes.

- ``RunnerPlanner``: an exported model directory through ``PolicyRunner`` (ONNX Runtime here, TensorRT on a Jetson).
- ``KinematicPlanner``: constant velocity or CTRA extrapolation of the ego state (no camera; the lower bound).
- ``EgoMLPPlanner``: the ego-status MLP fitted to a training store (needs torch).
The expert is not a planner: it is the synthetic world's own driver (``run_drive(planner=None)``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Protocol

import numpy as np

from pwm_model.config import PwmConfig
from pwm_model.data.contract import EgoInput
from pwm_model.errors import ConfigError
from pwm_model.eval.baselines import KINEMATIC_MODELS, kinematic

PLANNER_NAMES = ("expert", "cv", "ctra", "ego-mlp")


class Planner(Protocol):
    name: str
    waypoint_dt_s: float

    def reset(self) -> None:
        ...

    def step(self, frame_rgb: np.ndarray | None, t_ns: int, ego: EgoInput) -> np.ndarray:
        ...


class KinematicPlanner:
    """Extrapolate the ego state with ``kind`` (cv, ca, ctrv, ctra) over the model's K waypoints."""

    def __init__(self, kind: str, cfg: PwmConfig) -> None:
        if kind not in KINEMATIC_MODELS:
            raise ConfigError(f"unknown kinematic planner {kind!r}: choose one of {', '.join(KINEMATIC_MODELS)}")
        self.name, self.kind = kind.upper() if kind != "cv" else "constant velocity", kind
        self.k, self.waypoint_dt_s = cfg.data.num_waypoints, cfg.data.waypoint_dt_s

    def reset(self) -> None:
        pass

    def step(self, frame_rgb: np.ndarray | None, t_ns: int, ego: EgoInput) -> np.ndarray:
        return kinematic(self.kind, np.array([ego.speed_mps]), np.array([ego.accel_mps2]),
                         np.array([ego.yaw_rate_radps]), self.k, self.waypoint_dt_s)[0]


class RunnerPlanner:
    """A model directory (``pwm export``'s output) planning through ``PolicyRunner``."""

    def __init__(self, model_dir: str | os.PathLike[str], name: str | None = None) -> None:
        from pwm_model.runtime.runner import PolicyRunner

        self.runner = PolicyRunner.from_model_dir(model_dir)
        cfg = self.runner.config
        self.name = name or Path(model_dir).name
        self.waypoint_dt_s = cfg.data.waypoint_dt_s
        self.config = cfg

    def reset(self) -> None:
        self.runner.reset()

    def step(self, frame_rgb: np.ndarray | None, t_ns: int, ego: EgoInput) -> np.ndarray:
        if frame_rgb is None:
            raise ConfigError("a model planner needs the camera frames (render them)")
        return self.runner.step(frame_rgb, t_ns, ego).waypoints_xyyaw

    def close(self) -> None:
        self.runner.close()


class EgoMLPPlanner:
    """The ego-status MLP (``pwm_model.eval.ego_mlp``) fitted to the clips of ``train_store``."""

    def __init__(self, train_store: str | os.PathLike[str], cfg: PwmConfig, seed: int = 0) -> None:
        from pwm_model.data.contract import label_ego_vectors
        from pwm_model.data.tokens import load_labels
        from pwm_model.eval.ego_mlp import EgoMLP

        labels = load_labels(train_store)
        ego = label_ego_vectors(labels)
        self.mlp = EgoMLP.fit(ego, labels["waypoints_xyyaw"], labels["waypoints_valid"], seed=seed)
        self.name, self.waypoint_dt_s = "ego-status MLP", cfg.data.waypoint_dt_s

    def reset(self) -> None:
        pass

    def step(self, frame_rgb: np.ndarray | None, t_ns: int, ego: EgoInput) -> np.ndarray:
        return self.mlp.predict(ego.as_vector()[None])[0]
