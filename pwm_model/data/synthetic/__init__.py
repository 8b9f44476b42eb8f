"""The embedded synthetic driving world: procedural roads, traffic, scenario events and a front camera.

    from pwm_model.data.synthetic import SCENARIOS, simulate_drive
    for sample in simulate_drive(seed=0, seconds=30.0, camera=cfg.camera, scenario="cut_in"):
        ...  # pwm_model.data.schema.DriveSample

Modules: ``road`` (centre line, lanes, Frenet frame), ``scenery`` (roadside objects), ``appearance`` (colours,
time of day, haze), ``agents`` (other vehicles, IDM), ``ego`` (the ego driver), ``scenarios`` (events and ambient
traffic), ``render`` (the pinhole camera renderer), ``world`` (putting it together).
Seeds >= 1000 are for training data, seeds < 1000 for held-out evaluation (seed 0 is the demo drive).
"""

from pwm_model.data.synthetic.render import Renderer
from pwm_model.data.synthetic.scenarios import SCENARIOS
from pwm_model.data.synthetic.world import EPOCH_NS, World, simulate_drive

TRAIN_SEED_MIN = 1000  # training drives use seeds >= 1000; evaluation drives use seeds below

__all__ = ["EPOCH_NS", "SCENARIOS", "TRAIN_SEED_MIN", "Renderer", "World", "simulate_drive"]
