"""Other road users: vehicles that move along the road in Frenet coordinates, with lamps and IDM car following."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

INDICATOR_OFF, INDICATOR_LEFT, INDICATOR_RIGHT, INDICATOR_HAZARD = 0, 1, 2, 3
BLINK_PERIOD_S = 0.7  # direction indicators: on for the first half of each period (about 1.4 Hz)

# (length, width, height) ranges per kind
_DIMS = {
    "car": ((4.1, 4.9), (1.75, 1.95), (1.4, 1.6)),
    "van": ((4.8, 5.6), (1.9, 2.1), (1.9, 2.4)),
    "truck": ((7.5, 11.0), (2.4, 2.55), (3.2, 3.8)),
}


@dataclass(frozen=True)
class VehicleView:
    """What the renderer and the ground truth need of a vehicle at one instant (world frame)."""

    track_id: int
    kind: str  # car | van | truck (the shape); parked vehicles are labelled by ``label``
    label: str  # ground-truth class: car, van, truck, parked_car
    x_m: float
    y_m: float
    yaw_rad: float
    length_m: float
    width_m: float
    height_m: float
    color_rgb: tuple[float, float, float]
    brake_on: bool = False  # brake lamps lit
    left_lamp_on: bool = False  # left indicator currently lit (blinking phase included)
    right_lamp_on: bool = False
    lamps_on: bool = False  # head / tail lamps lit

    def box(self) -> np.ndarray:
        """(7,) box (x, y, z_centre, l, w, h, yaw) in the world frame."""
        return np.array([self.x_m, self.y_m, self.height_m / 2, self.length_m, self.width_m, self.height_m,
                         self.yaw_rad], np.float32)


def sample_dims(rng: np.random.Generator, kind: str) -> tuple[float, float, float]:
    (l0, l1), (w0, w1), (h0, h1) = _DIMS[kind]
    return float(rng.uniform(l0, l1)), float(rng.uniform(w0, w1)), float(rng.uniform(h0, h1))


def smoothstep5(tau: float) -> tuple[float, float]:
    """Quintic smooth step on [0, 1] and its derivative."""
    t = min(max(tau, 0.0), 1.0)
    return t * t * t * (10 - 15 * t + 6 * t * t), 30 * t * t * (1 - t) ** 2


@dataclass
class LateralMove:
    """A smooth lateral move from ``d0`` to ``d1`` over ``duration_s`` starting at ``t0_s``."""

    d0_m: float
    d1_m: float
    t0_s: float
    duration_s: float

    def at(self, t_s: float) -> tuple[float, float]:
        """(d, dd/dt) at time t."""
        p, dp = smoothstep5((t_s - self.t0_s) / self.duration_s)
        return self.d0_m + (self.d1_m - self.d0_m) * p, (self.d1_m - self.d0_m) * dp / self.duration_s

    def done(self, t_s: float) -> bool:
        return t_s >= self.t0_s + self.duration_s


def idm_accel(v_mps: float, v0_mps: float, gap_m: float | None, dv_mps: float, *, a_max: float = 1.5,
              b_comf: float = 2.5, headway_s: float = 1.4, s0_m: float = 3.0, lead_accel_mps2: float = 0.0,
              coolness: float = 0.99) -> float:
    """Car following: the Intelligent Driver Model with the constant-acceleration heuristic (Treiber & Kesting's
    ACC model), so a vehicle cutting in close but pulling away does not cause emergency braking.

    ``dv`` is own speed minus the leader's, ``gap`` bumper to bumper (None: free road).
    """
    v0 = max(v0_mps, 0.1)
    v = max(v_mps, 0.0)
    free = 1.0 - (v / v0) ** 4
    if gap_m is None:
        return a_max * free
    gap = max(gap_m, 0.1)
    s_star = s0_m + max(0.0, v * headway_s + v * dv_mps / (2.0 * math.sqrt(a_max * b_comf)))
    a_idm = a_max * (free - (s_star / gap) ** 2)
    if coolness <= 0.0:
        return a_idm
    v_lead = v - dv_mps
    a_l = min(lead_accel_mps2, a_max)
    denom = v_lead * v_lead - 2.0 * gap * a_l
    if v_lead * dv_mps <= -2.0 * gap * a_l and denom > 1e-6:
        a_cah = v * v * a_l / denom
    else:
        a_cah = a_l - max(dv_mps, 0.0) ** 2 / (2.0 * gap)
    if a_idm >= a_cah:
        return a_idm
    return (1.0 - coolness) * a_idm + coolness * (a_cah + b_comf * math.tanh((a_idm - a_cah) / b_comf))


@dataclass
class Agent:
    """A vehicle in Frenet coordinates. ``direction`` +1 drives with the ego, -1 is oncoming traffic."""

    track_id: int
    kind: str
    length_m: float
    width_m: float
    height_m: float
    color_rgb: tuple[float, float, float]
    s_m: float
    d_m: float
    speed_mps: float
    v_desired_mps: float
    direction: int = 1
    label: str = ""  # ground-truth class; defaults to kind
    parked: bool = False
    accel_mps2: float = 0.0
    d_rate_mps: float = 0.0
    lateral: LateralMove | None = None
    brake_lamp: bool = False
    indicator: int = INDICATOR_OFF
    indicator_t0_s: float = 0.0
    accel_override: float | None = None  # scripted acceleration (events), replaces IDM when set
    max_decel_mps2: float = 8.0
    role: str = "ambient"  # ambient | event
    extra: dict = field(default_factory=dict)  # event bookkeeping

    def __post_init__(self) -> None:
        if not self.label:
            self.label = "parked_car" if self.parked else self.kind

    def set_indicator(self, indicator: int, t_s: float) -> None:
        if indicator != self.indicator:
            self.indicator, self.indicator_t0_s = indicator, t_s

    def lamps_lit(self, t_s: float) -> tuple[bool, bool]:
        """(left, right) indicator lamps lit at time t (blinking from the moment the indicator was set)."""
        if self.indicator == INDICATOR_OFF:
            return False, False
        on = ((t_s - self.indicator_t0_s) % BLINK_PERIOD_S) < BLINK_PERIOD_S / 2
        left = on and self.indicator in (INDICATOR_LEFT, INDICATOR_HAZARD)
        right = on and self.indicator in (INDICATOR_RIGHT, INDICATOR_HAZARD)
        return left, right

    def move_laterally(self, d1_m: float, t_s: float, duration_s: float) -> None:
        self.lateral = LateralMove(self.d_m, d1_m, t_s, duration_s)

    def step(self, dt_s: float, t_s: float, leader_gap_m: float | None, leader_speed_mps: float,
             leader_accel_mps2: float = 0.0, idm: dict[str, float] | None = None) -> None:
        """Advance by ``dt_s``: IDM (or the scripted acceleration) along s, the lateral move across. ``idm``
        overrides ``idm_accel``'s parameters (a_max, b_comf, headway_s, s0_m)."""
        if self.parked:
            self.speed_mps = self.accel_mps2 = 0.0
            return
        if self.accel_override is not None:
            a = self.accel_override
        else:
            a = idm_accel(self.speed_mps, self.v_desired_mps, leader_gap_m, self.speed_mps - leader_speed_mps,
                          lead_accel_mps2=leader_accel_mps2, **(idm or {}))
        a = float(np.clip(a, -self.max_decel_mps2, 2.5))
        v = max(self.speed_mps + a * dt_s, 0.0)
        self.s_m += self.direction * 0.5 * (self.speed_mps + v) * dt_s
        self.accel_mps2 = (v - self.speed_mps) / dt_s
        self.speed_mps = v
        if self.lateral is not None:
            self.d_m, self.d_rate_mps = self.lateral.at(t_s + dt_s)
            if self.lateral.done(t_s + dt_s):
                self.lateral, self.d_rate_mps = None, 0.0
                if self.extra.pop("indicator_until_done", False):
                    self.set_indicator(INDICATOR_OFF, t_s + dt_s)

    def view(self, road, t_s: float, lamps_on: bool, pose: tuple[float, float, float] | None = None  # noqa: ANN001
             ) -> VehicleView:
        """The vehicle in the world frame; ``pose`` = (x, y, road heading) when already computed (batched)."""
        if pose is None:
            xy, h = road.frenet_to_world(self.s_m, self.d_m)
            pose = (float(xy[0]), float(xy[1]), float(h))
        xy, h = pose[:2], pose[2]
        v = max(self.speed_mps, 0.5)
        yaw = float(h) + (math.atan2(self.d_rate_mps, v) if self.direction > 0 else math.pi - math.atan2(
            self.d_rate_mps, v))
        left, right = self.lamps_lit(t_s)
        return VehicleView(
            track_id=self.track_id, kind=self.kind, label=self.label, x_m=float(xy[0]), y_m=float(xy[1]),
            yaw_rad=math.remainder(yaw, 2 * math.pi), length_m=self.length_m, width_m=self.width_m,
            height_m=self.height_m, color_rgb=self.color_rgb, brake_on=self.brake_lamp, left_lamp_on=left,
            right_lamp_on=right, lamps_on=lamps_on and not self.parked,
        )
