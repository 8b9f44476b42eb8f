"""The embedded synthetic driving world: procedural roads, traffic, scenario events and a front camera.

    from pwm_model.data.synthetic import SCENARIOS, simulate_drive
    for sample in simulate_drive(seed=0, seconds=30.0, camera=cfg.camera, scenario="cut_in"):
        ...  # pwm_model.data.schema.DriveSample

Modules: ``road`` (centre line, lanes, Frenet frame), ``scenery`` (roadside objects), ``appearance`` (colours,
time of day, haze), ``agents`` (other vehicles, IDM), ``ego`` (the ego driver), ``scenarios`` (events and ambient
traffic), ``render`` (the pinhole camera renderer), ``world`` (putting it together), ``shift`` (distribution
shifts: ``simulate_drive(..., shift="snow")`` renders conditions the training world never samples).
Seeds >= 1000 are for training data, seeds < 1000 for held-out evaluation (seed 0 is the demo drive).
The heavy parts (numpy, OpenCV) load on first use, so importing the names stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

from pwm_model.data.synthetic.names import SCENARIOS, SHIFTS, TRAIN_SEED_MIN

_LAZY = {"Renderer": "render", "World": "world", "simulate_drive": "world", "EPOCH_NS": "world"}

__all__ = ["EPOCH_NS", "SCENARIOS", "SHIFTS", "TRAIN_SEED_MIN", "Renderer", "World", "simulate_drive"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"pwm_model.data.synthetic.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
