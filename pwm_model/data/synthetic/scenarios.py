"""Scenario events and ambient traffic.

A drive strings events one after another; the active event names the scenario family of every frame
(between events the label is ``curve`` when a tight curve is near, else ``cruise``). Every event shows its cue
before it matters to the ego's plan: brake lamps before a lead brakes, the indicator and a drift before a cut-in,
the indicator and brake lamps of a car on the shoulder before it pulls out into the ego's lane,
a parked obstacle in view before the lane-change command goes out (once the target lane is free), curvature
visible well ahead on the road.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pwm_model.data.synthetic.events import EVENTS, Event
from pwm_model.data.synthetic.names import PRECURSOR_FAMILIES, SCENARIOS

if TYPE_CHECKING:
    from pwm_model.data.synthetic.world import World

__all__ = ["SCENARIOS", "EVENT_FAMILIES", "PRECURSOR_FAMILIES", "Scheduler", "AmbientTraffic"]
EVENT_FAMILIES = ("lead_brake", "cut_in", "parked_obstacle", "oncoming", "lane_change", "cruise", "pull_out")
_EVENT_WEIGHTS = (0.18, 0.18, 0.14, 0.12, 0.14, 0.12, 0.12)
CURVE_LABEL_KAPPA = 1.0 / 350.0  # a curve this tight (or tighter) within 4 s ahead labels the frame ``curve``


class Scheduler:
    """Picks the next event (restricted to one family when a scenario is given) and labels every frame."""

    def __init__(self, rng: np.random.Generator, scenario: str | None) -> None:
        self.rng = rng
        self.scenario = scenario
        if scenario is None:
            self.pool: tuple[str, ...] = EVENT_FAMILIES
        elif scenario in EVENTS and scenario != "cruise":
            self.pool = (scenario,)
        else:
            self.pool = ()  # cruise and curve drives: ambient traffic only, the road does the rest
        self.current: Event | None = None
        self.next_start_s = float(rng.uniform(0.3, 1.0) if scenario else rng.uniform(1.0, 3.0))

    def update(self, w: World) -> None:
        if self.current is not None:
            if self.current.update(w):
                self.current.finish(w)
                self.current = None
                self.next_start_s = w.t_s + float(self.rng.uniform(1.0, 4.0) if self.scenario is None
                                                  else self.rng.uniform(1.0, 2.5))
        if self.current is None and self.pool and w.t_s >= self.next_start_s:
            if self.scenario is None:
                family = str(self.rng.choice(self.pool, p=_EVENT_WEIGHTS))
            else:
                family = self.pool[0]
            event = EVENTS[family](self.rng)
            if event.start(w):
                self.current = event
            else:
                self.next_start_s = w.t_s + 0.5

    def label(self, w: World) -> str:
        if self.current is not None:
            return self.current.label
        if self.scenario == "cruise":
            return "cruise"
        s = w.ego.s_m + np.arange(0.0, 4.0 * max(w.ego.speed_mps, 5.0) + 1.0, 2.0)
        return "curve" if float(np.max(np.abs(w.road.curvature_at(s)))) >= CURVE_LABEL_KAPPA else "cruise"


class AmbientTraffic:
    """Keeps other vehicles around: slower ones ahead and faster ones from behind in the other lanes,
    oncoming traffic on the other side. Vehicles appear out of view (far in the haze or behind the camera)."""

    def __init__(self, rng: np.random.Generator, density: float) -> None:
        self.rng = rng
        self.density = density
        self.next_spawn_s = 0.0
        self.next_oncoming_s = 0.0

    def populate(self, w: World) -> None:
        """Initial traffic spread over the road ahead."""
        for lane in range(w.road.n_forward):
            if lane == w.ego.lane:
                continue
            for s in np.arange(40.0, 220.0, 60.0 / max(self.density, 0.2)):
                if self.rng.random() < 0.6:
                    s_a = w.ego.center_s_m + s + float(self.rng.uniform(-10, 10))
                    v = w.ego.v_limit_mps * float(self.rng.uniform(0.7, 0.95))
                    w.spawn(self._kind(), s_a, w.road.lane_d_m(lane), v)
        for lane in range(w.road.n_oncoming):
            for s in np.arange(60.0, 260.0, 70.0 / max(self.density, 0.2)):
                if self.rng.random() < 0.5:
                    w.spawn(self._kind(), w.ego.center_s_m + s, w.road.oncoming_d_m(lane),
                            w.ego.v_limit_mps * float(self.rng.uniform(0.7, 1.05)), direction=-1)

    def _kind(self) -> str:
        return str(self.rng.choice(["car", "van", "truck"], p=[0.75, 0.15, 0.10]))

    def update(self, w: World) -> None:
        ego = w.ego
        s_e = ego.center_s_m
        for a in list(w.agents):
            if a.role != "ambient":
                continue
            rel = a.s_m - s_e
            if rel < -90.0 or rel > 330.0 or (a.direction < 0 and rel < -40.0):
                w.agents.remove(a)
        if w.t_s >= self.next_spawn_s:
            self.next_spawn_s = w.t_s + float(self.rng.exponential(6.0 / self.density))
            lanes = [ln for ln in range(w.road.n_forward) if ln != ego.lane and ln != w.reserved_lane]
            if ego.request is not None:  # keep the lane the ego is about to enter free
                lanes = [ln for ln in lanes if ln != ego.request.target_lane]
            if lanes:
                lane = lanes[int(self.rng.integers(len(lanes)))]
                d = w.road.lane_d_m(lane)
                if self.rng.random() < 0.55:
                    s = s_e + float(self.rng.uniform(190.0, 240.0))
                    v = ego.v_limit_mps * float(self.rng.uniform(0.6, 0.92))
                else:
                    s = s_e - float(self.rng.uniform(45.0, 70.0))
                    v = ego.v_limit_mps * float(self.rng.uniform(1.12, 1.3))
                if not w.lane_occupied(d, s - 30.0, s + 30.0):
                    w.spawn(self._kind(), s, d, v)
        if w.t_s >= self.next_oncoming_s:
            self.next_oncoming_s = w.t_s + float(self.rng.exponential(5.0 / self.density))
            lane = int(self.rng.integers(w.road.n_oncoming))
            d = w.road.oncoming_d_m(lane)
            s = s_e + float(self.rng.uniform(230.0, 290.0))
            if not w.lane_occupied(d, s - 30.0, s + 30.0, direction=-1):
                w.spawn(self._kind(), s, d, w.ego.v_limit_mps * float(self.rng.uniform(0.7, 1.05)), direction=-1)

