"""The scenario events of the synthetic world, one class per family (``EVENTS``); the scheduler in ``scenarios``
strings them one after another. Every event shows its cue before it matters to the ego's plan (see ``scenarios``),
and the lead brake, cut-in and pull-out log their precursor and onset with ``World.mark_event``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pwm_model.data.schema import COMMAND_LEFT, COMMAND_RIGHT
from pwm_model.data.synthetic.agents import INDICATOR_HAZARD, INDICATOR_LEFT, INDICATOR_OFF, INDICATOR_RIGHT, Agent
from pwm_model.data.synthetic.ego import EGO_LENGTH_M

if TYPE_CHECKING:
    from pwm_model.data.synthetic.world import World

__all__ = ["EVENTS", "Event"]

class Event:
    """One scenario event. ``start`` returns False when its preconditions do not hold now (it is retried)."""

    label = "cruise"

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng
        self.t0_s = 0.0

    def start(self, w: World) -> bool:
        self.t0_s = w.t_s
        return True

    def update(self, w: World) -> bool:
        """Advance the event's script; True when it is over."""
        return True

    def finish(self, w: World) -> None:
        """Hand any event vehicles back to the ambient traffic."""

    def _go(self, phase: str, w: World) -> None:
        """Enter the script's ``phase`` now (``phase_t0``: when it began)."""
        self.phase, self.phase_t0 = phase, w.t_s

    @staticmethod
    def _gap_m(vehicle: Agent, w: World) -> float:
        """Bumper-to-bumper distance from the ego's front to ``vehicle``'s rear along the road (m)."""
        return vehicle.s_m - w.ego.center_s_m - (vehicle.length_m + EGO_LENGTH_M) / 2


class VehicleEvent(Event):
    """An event scripted around one vehicle (``vehicle``), over once that vehicle has left the world; ``script``
    advances it with the time in the current phase and the vehicle's gap ahead of the ego."""

    vehicle: Agent

    def update(self, w: World) -> bool:
        if self.vehicle not in w.agents:
            return True
        return self.script(w, w.t_s - self.phase_t0, self._gap_m(self.vehicle, w))

    def script(self, w: World, dt: float, gap: float) -> bool:
        raise NotImplementedError


class CruiseEvent(Event):
    label = "cruise"

    def start(self, w: World) -> bool:
        super().start(w)
        self.duration_s = float(self.rng.uniform(5.0, 10.0))
        return True

    def update(self, w: World) -> bool:
        return w.t_s - self.t0_s >= self.duration_s


def _free_directions(w: World) -> list[int]:
    lane, n = w.ego.lane, w.road.n_forward
    dirs = []
    if lane > 0:
        dirs.append(COMMAND_LEFT)
    if lane < n - 1:
        dirs.append(COMMAND_RIGHT)
    return dirs


class LaneChangeEvent(Event):
    """A route lane change: the command goes out when the target lane is free, leads the manoeuvre by 1-2 s and
    holds until it is complete."""

    label = "lane_change"

    def start(self, w: World) -> bool:
        super().start(w)
        if w.ego.request is not None or w.ego.changing_lane:
            return False
        dirs = _free_directions(w)
        free = [d for d in dirs if w.ego.lane_free(w.ego.lane + (-1 if d == COMMAND_LEFT else 1), w.agents)]
        choice = free or dirs
        direction = int(choice[self.rng.integers(len(choice))])
        self.done_changes = w.ego.lane_changes_done
        self.finished_s: float | None = None
        return w.ego.request_lane_change(direction, w.t_s, float(self.rng.uniform(1.0, 2.0)), w.agents)

    def update(self, w: World) -> bool:
        if self.finished_s is None and w.ego.lane_changes_done > self.done_changes:
            self.finished_s = w.t_s
        if self.finished_s is not None:
            return w.t_s - self.finished_s >= 1.0
        if w.t_s - self.t0_s > 20.0:  # the target lane never cleared
            w.ego.cancel_request()
            return not w.ego.changing_lane
        return False


class ParkedObstacleEvent(Event):
    """A stopped vehicle in the ego lane; the lane-change command comes when it is first in view."""

    label = "parked_obstacle"

    def start(self, w: World) -> bool:
        super().start(w)
        ego = w.ego
        if ego.request is not None or ego.changing_lane or not _free_directions(w):
            return False
        v = max(ego.speed_mps, 8.0)
        dist = float(np.clip(8.5 * v, 100.0, 175.0))
        s_obs = ego.center_s_m + dist
        d_lane = w.road.lane_d_m(ego.lane)
        if w.lane_occupied(d_lane, ego.center_s_m, s_obs + 40.0):
            w.clear_lane_ahead(ego.lane, ego.center_s_m, s_obs + 40.0)  # slower traffic ahead moves over first
            return False
        kind = str(self.rng.choice(["car", "van", "truck"], p=[0.6, 0.25, 0.15]))
        self.obstacle = w.spawn(kind, s_obs, d_lane + float(self.rng.uniform(-0.3, 0.3)), 0.0, parked=True,
                                role="event")
        if self.rng.random() < 0.7:
            self.obstacle.set_indicator(INDICATOR_HAZARD, w.t_s)
        self.commanded = False
        self.done_changes = ego.lane_changes_done
        return True

    def update(self, w: World) -> bool:
        ego, obs = w.ego, self.obstacle
        gap = obs.s_m - ego.center_s_m
        if not self.commanded and (w.in_view(obs) or gap < 60.0):
            dirs = _free_directions(w)
            free = [d for d in dirs if ego.lane_free(ego.lane + (-1 if d == COMMAND_LEFT else 1), w.agents)]
            choice = free or dirs
            direction = int(choice[self.rng.integers(len(choice))])
            self.commanded = ego.request_lane_change(direction, w.t_s, float(self.rng.uniform(1.0, 2.0)), w.agents)
        passed = gap < -15.0 and ego.lane_changes_done > self.done_changes and not ego.changing_lane
        return passed or w.t_s - self.t0_s > 60.0

    def finish(self, w: World) -> None:
        self.obstacle.role = "ambient"
        w.ego.cancel_request()


class LeadBrakeEvent(VehicleEvent):
    """The vehicle ahead in the ego lane lights its brake lamps 0.5-1 s before it brakes hard."""

    label = "lead_brake"

    def start(self, w: World) -> bool:
        super().start(w)
        ego = w.ego
        if ego.changing_lane or ego.request is not None:
            return False
        lead = w.agent_by_id(ego.leader_id)
        gap_now = None if lead is None else lead.s_m - ego.center_s_m
        if lead is None or lead.parked or lead.role != "ambient" or gap_now is None or gap_now > 110.0:
            d_lane = w.road.lane_d_m(ego.lane)
            dist = float(self.rng.uniform(55.0, 80.0))
            if w.lane_occupied(d_lane, ego.center_s_m, ego.center_s_m + dist + 60.0):
                return False
            v = 0.7 * max(ego.speed_mps, 6.0)
            lead = w.spawn("car" if self.rng.random() < 0.8 else "van", ego.center_s_m + dist, d_lane, v, role="event")
        lead.role = "event"
        lead.v_desired_mps = lead.speed_mps
        self.lead = self.vehicle = lead
        self.phase, self.phase_t0 = "approach", w.t_s
        self.lamp_lead_s = float(self.rng.uniform(0.5, 1.0))
        self.decel = float(self.rng.uniform(3.0, 6.0))
        self.v_target = float(self.rng.choice([0.0, self.rng.uniform(0.15, 0.5)], p=[0.3, 0.7]))
        self.hold_s = float(self.rng.uniform(1.0, 2.5))
        return True

    def script(self, w: World, dt: float, gap: float) -> bool:
        lead, ego = self.lead, w.ego
        if self.phase == "approach":
            if gap <= max(1.5 * (3.0 + 1.4 * ego.speed_mps), 18.0) or dt > 7.0:
                self.v_target *= lead.speed_mps
                lead.extra["scripted_lamps"] = True
                lead.brake_lamp = True
                lead.accel_override = -0.2
                w.mark_event(self.label, "precursor")
                self._go("lamps", w)
        elif self.phase == "lamps":
            if dt >= self.lamp_lead_s:
                lead.accel_override = -self.decel
                w.mark_event(self.label, "onset")
                self._go("brake", w)
        elif self.phase == "brake":
            if lead.speed_mps <= self.v_target + 0.05:
                lead.accel_override = 0.0
                self._go("hold", w)
        elif self.phase == "hold":
            if dt >= self.hold_s:
                lead.brake_lamp = False
                lead.extra.pop("scripted_lamps", None)
                lead.accel_override = None
                lead.v_desired_mps = ego.v_limit_mps + 3.0
                self._go("release", w)
        elif self.phase == "release":
            return dt >= 3.0
        return w.t_s - self.t0_s > 40.0

    def finish(self, w: World) -> None:
        self.lead.role = "ambient"
        self.lead.accel_override = None
        self.lead.extra.pop("scripted_lamps", None)
        self.lead.v_desired_mps = max(self.lead.v_desired_mps, w.ego.v_limit_mps + 3.0)


class CutInEvent(VehicleEvent):
    """A vehicle in the next lane signals, drifts towards the lane line and cuts in ahead of the ego.

    Either a slower vehicle ahead that the ego is catching up with, or (when there is none and the lane is clear)
    a faster one that overtakes the ego first and slows down after cutting in.
    """

    label = "cut_in"

    def start(self, w: World) -> bool:
        super().start(w)
        ego = w.ego
        if ego.changing_lane or ego.request is not None:
            return False
        self.gap_target = float(self.rng.uniform(8.0, 16.0))
        self.signal_s = float(self.rng.uniform(0.8, 1.5))
        self.cut_s = float(self.rng.uniform(2.0, 3.0))
        sides = []
        for d in _free_directions(w):  # the side the car comes from, seen from the ego
            lane = ego.lane + (-1 if d == COMMAND_LEFT else 1)
            sides.append((d, lane))
        order = [sides[i] for i in self.rng.permutation(len(sides))]
        # (a) a slower vehicle ahead in the next lane
        for direction, lane in order:
            d_lane = w.road.lane_d_m(lane)
            for a in w.agents:
                gap = a.s_m - ego.center_s_m - (a.length_m + EGO_LENGTH_M) / 2
                if (a.role == "ambient" and a.direction > 0 and not a.parked and a.lateral is None
                        and abs(a.d_m - d_lane) < 0.5 and self.gap_target + 5.0 < gap < 70.0
                        and a.speed_mps < ego.speed_mps - 1.0 and a.kind != "truck"
                        and (w.leader_of(a)[0] or 1e9) > 30.0):
                    self.gap_target = float(self.rng.uniform(11.0, 18.0))
                    self._setup(w, a, direction, lane, "approach")
                    return True
        # (b) a faster vehicle from behind, when the next lane is clear
        for direction, lane in order:
            d_lane = w.road.lane_d_m(lane)
            if not w.lane_occupied(d_lane, ego.center_s_m - 50.0, ego.center_s_m + 100.0):
                v = max(ego.speed_mps, 5.0)
                s = ego.center_s_m - float(self.rng.uniform(7.0, 12.0))
                car = w.spawn(str(self.rng.choice(["car", "van"], p=[0.85, 0.15])), s, d_lane, v + 5.0, role="event")
                self._setup(w, car, direction, lane, "overtake")
                return True
        return False

    def _setup(self, w: World, car: Agent, direction: int, lane: int, phase: str) -> None:
        self.car = self.vehicle = car
        car.role = "event"
        # the car moves towards the ego lane: right if it is on the ego's left
        self.toward = INDICATOR_RIGHT if direction == COMMAND_LEFT else INDICATOR_LEFT
        self.from_behind = phase == "overtake"
        self.phase, self.phase_t0 = phase, w.t_s
        w.reserved_lane = lane

    def script(self, w: World, dt: float, gap: float) -> bool:
        car, ego = self.car, w.ego
        sign = -1.0 if self.toward == INDICATOR_RIGHT else 1.0  # lateral direction of the cut (d)
        if self.phase in ("overtake", "approach"):
            if self.phase == "overtake":
                # pass the ego about 5 m/s faster (the lane ahead was checked clear at the start)
                car.accel_override = float(np.clip(ego.speed_mps + 5.0 - car.speed_mps, -1.5, 1.5))
                ready = gap >= self.gap_target
            else:
                # let the ego catch up within a few seconds
                closing = float(np.clip((gap - self.gap_target) / 4.0, 2.0, 7.0))
                v_goal = max(ego.speed_mps - closing, 0.5 * ego.speed_mps)
                car.accel_override = float(np.clip(1.5 * (v_goal - car.speed_mps), -2.5, 1.5))
                ready = gap <= self.gap_target or (dt > 8.0 and gap < 30.0)
            if ready:
                car.accel_override = None
                car.set_indicator(self.toward, w.t_s)
                if self.from_behind:
                    car.v_desired_mps = ego.speed_mps + 1.0
                else:  # hold a steady speed a little below the ego's while signalling and cutting in
                    self.v_hold = max(ego.speed_mps - 2.0, 0.6 * ego.speed_mps)
                    car.v_desired_mps = self.v_hold
                car.move_laterally(car.d_m + sign * 0.35, w.t_s, self.signal_s)
                w.mark_event(self.label, "precursor")
                self._go("signal", w)
            elif dt > 12.0:
                return True
        dt = w.t_s - self.phase_t0
        if not self.from_behind and self.phase in ("signal", "cut"):
            # it is leaving its lane (often to pass a slower vehicle): it follows that one only when close
            lead_gap = w.leader_of(car)[0]
            car.accel_override = (None if lead_gap is not None and lead_gap < 8.0
                                  else float(np.clip(1.5 * (self.v_hold - car.speed_mps), -1.5, 1.0)))
        if self.phase == "signal":
            if dt >= self.signal_s:
                car.move_laterally(w.road.lane_d_m(ego.lane), w.t_s, self.cut_s)
                w.mark_event(self.label, "onset")
                self._go("cut", w)
        elif self.phase == "cut":
            if dt >= self.cut_s:
                car.set_indicator(INDICATOR_OFF, w.t_s)
                car.accel_override = None
                if self.from_behind:
                    car.v_desired_mps = 0.75 * max(car.speed_mps, 4.0)
                w.reserved_lane = None
                self._go("slow", w)
        elif self.phase == "slow":
            if dt >= 3.0:
                car.v_desired_mps = ego.v_limit_mps + 3.0
                self._go("away", w)
        elif self.phase == "away":
            return dt >= 2.0
        return w.t_s - self.t0_s > 40.0

    def finish(self, w: World) -> None:
        self.car.role = "ambient"
        self.car.accel_override = None
        self.car.set_indicator(INDICATOR_OFF, w.t_s)
        self.car.v_desired_mps = max(self.car.v_desired_mps, w.ego.v_limit_mps + 3.0)
        if self.car.lateral is None:  # back to a lane centre after an interrupted drift
            self.car.move_laterally(w.road.lane_d_m(w.road.lane_of(self.car.d_m)), w.t_s, 1.5)
        w.reserved_lane = None


class OncomingEvent(Event):
    """A platoon of oncoming vehicles (often led by a truck) passes close to the divider."""

    label = "oncoming"

    def start(self, w: World) -> bool:
        super().start(w)
        d_lane = w.road.oncoming_d_m(0)
        s = w.ego.center_s_m + float(self.rng.uniform(150.0, 210.0))
        if w.lane_occupied(d_lane, s - 30.0, s + 120.0, direction=-1):
            return False
        v = float(self.rng.uniform(11.0, 20.0))
        self.cars = []
        for i in range(int(self.rng.integers(2, 5))):
            kind = "truck" if i == 0 and self.rng.random() < 0.5 else str(self.rng.choice(["car", "van"], p=[0.8, 0.2]))
            self.cars.append(w.spawn(kind, s, d_lane, v, direction=-1, role="event"))
            s += float(self.rng.uniform(18.0, 32.0))
        return True

    def update(self, w: World) -> bool:
        alive = [c for c in self.cars if c in w.agents]
        return not alive or all(c.s_m < w.ego.center_s_m - 10.0 for c in alive) or w.t_s - self.t0_s > 40.0

    def finish(self, w: World) -> None:
        for c in self.cars:
            c.role = "ambient"


class PullOutEvent(VehicleEvent):
    """A car parked on the shoulder of the ego's lane signals (indicator and brake lamps as it releases the parking
    brake) 1-2 s before it pulls out into the lane ahead of the ego, 2-3.5 s of the ego's travel away."""

    label = "pull_out"

    def start(self, w: World) -> bool:
        super().start(w)
        ego = w.ego
        if ego.changing_lane or ego.request is not None or ego.lane != w.road.n_forward - 1:
            return False
        v = max(ego.speed_mps, 8.0)
        dist = float(np.clip(8.5 * v, 90.0, 170.0))
        s_car = ego.center_s_m + dist
        if w.lane_occupied(w.road.lane_d_m(ego.lane), ego.center_s_m, s_car + 40.0):
            return False
        kind = "car" if self.rng.random() < 0.85 else "van"
        d_kerb = w.road.right_edge_d_m - 1.0  # on the paved shoulder, clear of the edge line
        self.car = self.vehicle = w.spawn(kind, s_car, d_kerb, 0.0, parked=True, role="event")
        self.signal_s = float(self.rng.uniform(1.0, 2.0))
        self.pull_gap_s = float(self.rng.uniform(2.0, 3.5))
        self.move_s = float(self.rng.uniform(2.5, 3.5))
        self.v_target = float(self.rng.uniform(0.35, 0.6)) * ego.v_limit_mps
        self.phase, self.phase_t0 = "parked", w.t_s
        return True

    def script(self, w: World, dt: float, gap: float) -> bool:
        car, ego = self.car, w.ego
        if self.phase == "parked":
            if gap <= max(ego.speed_mps, 5.0) * (self.signal_s + self.pull_gap_s):
                car.parked, car.label = False, car.kind
                car.accel_override = 0.0
                car.set_indicator(INDICATOR_LEFT, w.t_s)
                w.mark_event(self.label, "precursor")
                self._go("signal", w)
            elif gap < 0.0 or dt > 25.0:
                return True
        elif self.phase == "signal":
            if dt >= self.signal_s:
                car.accel_override = 2.0
                car.move_laterally(w.road.lane_d_m(ego.lane), w.t_s, self.move_s)
                w.mark_event(self.label, "onset")
                self._go("pull", w)
        elif self.phase in ("pull", "merge"):
            if car.speed_mps >= self.v_target:
                car.accel_override = None
                car.v_desired_mps = self.v_target
            if self.phase == "pull" and car.lateral is None:
                car.set_indicator(INDICATOR_OFF, w.t_s)
                self._go("merge", w)
            elif self.phase == "merge" and dt >= 3.0:
                return True
        return w.t_s - self.t0_s > 40.0

    def finish(self, w: World) -> None:
        self.car.role = "ambient"
        self.car.accel_override = None
        self.car.set_indicator(INDICATOR_OFF, w.t_s)
        if self.car.parked:  # never pulled out: it stays where it is until the traffic drops it
            return
        self.car.v_desired_mps = max(self.car.v_desired_mps, w.ego.v_limit_mps + 3.0)


EVENTS = {"cruise": CruiseEvent, "lane_change": LaneChangeEvent, "parked_obstacle": ParkedObstacleEvent,
           "lead_brake": LeadBrakeEvent, "cut_in": CutInEvent, "oncoming": OncomingEvent, "pull_out": PullOutEvent}
