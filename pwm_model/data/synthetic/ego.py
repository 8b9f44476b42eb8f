"""The ego driver: pure-pursuit lane keeping, IDM speed control with a curve-speed limit, commanded lane changes.

The ego is a kinematic bicycle whose reference point (``base_link``) is the rear axle, as in most driving datasets.
Its box centre lies ``EGO_CENTER_X_M`` ahead of ``base_link``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pwm_model.data.schema import COMMAND_LEFT, COMMAND_STRAIGHT
from pwm_model.data.synthetic.agents import Agent, LateralMove, idm_accel
from pwm_model.data.synthetic.road import Road
from pwm_model.geometry import box_footprint, polygons_intersect

EGO_LENGTH_M, EGO_WIDTH_M, EGO_HEIGHT_M = 4.6, 1.85, 1.5
EGO_CENTER_X_M = 1.4  # box centre ahead of the rear axle (rear overhang 0.9 m)
WHEELBASE_M = 2.8
LAT_ACCEL_MAX_MPS2 = 2.2  # comfortable lateral acceleration: sets the speed through curves
CURVE_DECEL_MPS2 = 1.5  # comfortable deceleration when approaching a slower curve
MAX_DECEL_MPS2 = 8.0
OVERLAP_MARGIN_M = 0.4  # extra lateral clearance when deciding whether a vehicle is in the ego's path


def ego_box(x_m: float, y_m: float, yaw_rad: float) -> np.ndarray:
    """(7,) world box of the ego whose rear axle is at (x, y, yaw)."""
    c, s = math.cos(yaw_rad), math.sin(yaw_rad)
    return np.array([x_m + EGO_CENTER_X_M * c, y_m + EGO_CENTER_X_M * s, EGO_HEIGHT_M / 2, EGO_LENGTH_M,
                     EGO_WIDTH_M, EGO_HEIGHT_M, yaw_rad])


@dataclass
class LaneChangeRequest:
    """A lane change the route asks for. The route command goes out (``announced``) once the target lane is free,
    ``lead_s`` before the manoeuvre may start; until then the ego keeps its lane with the command straight."""

    direction: int  # COMMAND_LEFT or COMMAND_RIGHT
    issued_s: float
    lead_s: float  # how long the command leads the manoeuvre (1-2 s in the scenarios)
    target_lane: int
    announced: bool = False
    start_after_s: float = float("inf")  # the manoeuvre starts no earlier than this (announcement + lead)


class EgoDriver:
    """Ego state plus the driver that controls it. Call ``step`` with the other agents every ``dt``."""

    def __init__(self, road: Road, lane: int, s_m: float, speed_mps: float, v_limit_mps: float) -> None:
        self.road = road
        self.lane = lane
        xy, h = road.frenet_to_world(s_m, road.lane_d_m(lane))
        self.x_m, self.y_m, self.yaw_rad = float(xy[0]), float(xy[1]), float(h)
        self.speed_mps, self.accel_mps2, self.yaw_rate_radps = speed_mps, 0.0, 0.0
        self.v_limit_mps = v_limit_mps
        self.kappa_1pm = float(road.curvature_at(s_m))
        self.s_m, self.d_m = s_m, road.lane_d_m(lane)  # rear axle in Frenet coordinates
        self.lateral: LateralMove | None = None
        self.request: LaneChangeRequest | None = None
        self.command = COMMAND_STRAIGHT
        self.lane_changes_done = 0
        self.leader_id: int | None = None
        self._creep = False

    # --- Frenet helpers ------------------------------------------------------------------------------
    @property
    def center_s_m(self) -> float:
        return self.s_m + EGO_CENTER_X_M * math.cos(self.yaw_rad - float(self.road.heading_at(self.s_m)))

    @property
    def center_d_m(self) -> float:
        return self.d_m + EGO_CENTER_X_M * math.sin(self.yaw_rad - float(self.road.heading_at(self.s_m)))

    def d_ref_m(self, t_s: float) -> float:
        """The lateral offset the driver aims for at time t (lane centre or the lane-change profile)."""
        if self.lateral is not None:
            return self.lateral.at(t_s)[0]
        return self.road.lane_d_m(self.lane)

    @property
    def changing_lane(self) -> bool:
        return self.lateral is not None

    def box(self) -> np.ndarray:
        return ego_box(self.x_m, self.y_m, self.yaw_rad)

    # --- commands ------------------------------------------------------------------------------------
    def request_lane_change(self, direction: int, t_s: float, lead_s: float,
                            agents: list[Agent] | None = None) -> bool:
        """Ask for a lane change towards ``direction``. The route command goes out now if the target lane is free
        (of ``agents``), else as soon as it is; the manoeuvre starts ``lead_s`` after the command. So a left or
        right command always announces a manoeuvre that begins within about ``lead_s``."""
        target = self.lane - 1 if direction == COMMAND_LEFT else self.lane + 1
        if self.request is not None or self.lateral is not None or not 0 <= target < self.road.n_forward:
            return False
        self.request = LaneChangeRequest(direction, t_s, lead_s, target)
        self._announce_if_free(t_s, agents or [])
        return True

    def _announce_if_free(self, t_s: float, agents: list[Agent]) -> None:
        req = self.request
        if req is not None and not req.announced and self.lane_free(req.target_lane, agents):
            req.announced, req.start_after_s = True, t_s + req.lead_s
            self.command = req.direction

    def lane_free(self, lane: int, agents: list[Agent]) -> bool:
        """No vehicle in ``lane`` close enough ahead or behind to make a lane change unsafe."""
        d_lane = self.road.lane_d_m(lane)
        s_c, v = self.center_s_m, self.speed_mps
        for a in agents:
            # vehicles whose footprint reaches more than 0.2 m into the target lane count
            if a.direction < 0 or abs(a.d_m - d_lane) > self.road.lane_width_m / 2 + a.width_m / 2 - 0.2:
                continue
            ds = a.s_m - s_c
            half = (a.length_m + EGO_LENGTH_M) / 2
            if ds >= 0:
                if ds - half < max(10.0, 0.9 * v + 3.0 * max(v - a.speed_mps, 0.0)):
                    return False
            elif -ds - half < max(10.0, 0.8 * a.speed_mps + 3.0 * max(a.speed_mps - v, 0.0)):
                return False
        return True

    # --- driving -------------------------------------------------------------------------------------
    def curve_speed_mps(self) -> float:
        """The highest speed from which every curve in the next 160 m can be reached comfortably."""
        s = self.s_m + np.arange(0.0, 160.0, 2.0)
        k = np.abs(self.road.curvature_at(s))
        v_curve = np.sqrt(LAT_ACCEL_MAX_MPS2 / np.maximum(k, 1e-4))
        return float(np.min(np.sqrt(v_curve**2 + 2 * CURVE_DECEL_MPS2 * (s - self.s_m))))

    def _would_touch(self, a: Agent, t_s: float, ahead_m: float) -> bool:
        """Would the ego's footprint (grown by 0.3 m), moved ``ahead_m`` along its heading, touch vehicle ``a``?"""
        c, s = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        mine = ego_box(self.x_m + ahead_m * c, self.y_m + ahead_m * s, self.yaw_rad)
        mine[3:5] += 0.6
        view = a.view(self.road, t_s, False)
        return polygons_intersect(box_footprint(mine), box_footprint(view.box().astype(float)))

    def _leader(self, agents: list[Agent], t_s: float) -> tuple[float | None, float, float, int | None]:
        """(gap, speed, acceleration, track id) of the vehicle the ego must follow, or (None, 0, 0, None).

        Sets ``_creep`` when a vehicle the ego is pulling out around is close but clear of its path.
        """
        self._creep = False
        s_c, d_c, v = self.center_s_m, self.center_d_m, self.speed_mps
        best: tuple[float | None, float, float, int | None] = (None, 0.0, 0.0, None)
        for a in agents:
            if a.direction < 0:
                continue
            gap = a.s_m - s_c - (a.length_m + EGO_LENGTH_M) / 2
            if gap < -EGO_LENGTH_M * 0.5 or gap > 200.0:
                continue
            reach = (a.width_m + EGO_WIDTH_M) / 2 + OVERLAP_MARGIN_M
            closing = v - a.speed_mps
            t_arrive = min(gap / closing, 4.0) if closing > 0.1 else 4.0
            t_arrive = max(t_arrive, 0.0)

            def a_d(tau: float, a: Agent = a) -> float:
                return a.lateral.at(t_s + tau)[0] if a.lateral is not None else a.d_m

            overlap_now = abs(d_c - a.d_m) < reach
            # a vehicle overlapping the ego now is followed unless a lane change will take the ego clear of it
            relevant = overlap_now and not self.changing_lane and self.request is None
            if overlap_now and self.changing_lane and gap < 1.0 + 0.6 * v:
                # close while pulling out around it: stop only if driving on straight would touch it
                if self._would_touch(a, t_s, min(max(gap, 0.0) + 0.5, 3.0)):
                    relevant = True
                else:
                    self._creep = True
            for tau in (max(t_arrive - 1.0, 0.0), t_arrive):
                if abs(self.d_ref_m(t_s + tau) - a_d(tau)) < reach:
                    relevant = True
            if relevant and (best[0] is None or gap < best[0]):
                best = (gap, a.speed_mps, a.accel_mps2, a.track_id)
        return best

    def step(self, dt_s: float, t_s: float, agents: list[Agent]) -> None:
        road = self.road
        # 1. lane-change state machine: announce once the target lane is free, start after the lead (if still free)
        if self.request is not None and self.lateral is None:
            self._announce_if_free(t_s, agents)
        if self.request is not None and self.lateral is None and t_s >= self.request.start_after_s:
            if self.lane_free(self.request.target_lane, agents):
                duration = float(np.clip(2.6 + 0.06 * self.speed_mps, 3.0, 4.5))
                self.lateral = LateralMove(road.lane_d_m(self.lane), road.lane_d_m(self.request.target_lane), t_s,
                                           duration)
                self.lane = self.request.target_lane
        heading_err = math.remainder(self.yaw_rad - float(road.heading_at(self.s_m)), 2 * math.pi)
        if (self.lateral is not None and self.lateral.done(t_s) and abs(self.center_d_m - self.lateral.d1_m) < 0.3
                and abs(heading_err) < 0.05):
            self.lateral, self.request = None, None
            self.command = COMMAND_STRAIGHT
            self.lane_changes_done += 1

        # 2. lateral: pure pursuit towards the reference path
        v = self.speed_mps
        look_m = float(np.clip(0.9 * v, 4.0, 25.0))
        target_xy, _ = road.frenet_to_world(self.s_m + look_m, self.d_ref_m(t_s + look_m / max(v, 2.0)))
        dx, dy = target_xy[0] - self.x_m, target_xy[1] - self.y_m
        c, s = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        x_l, y_l = c * dx + s * dy, -s * dx + c * dy
        self.steer_towards(dt_s, 2.0 * y_l / max(x_l * x_l + y_l * y_l, 1.0))

        # 3. longitudinal: IDM towards min(speed limit, curve speed), following the leader
        gap, v_lead, a_lead, self.leader_id = self._leader(agents, t_s)
        v0 = min(self.v_limit_mps, self.curve_speed_mps())
        if self._creep:
            v0 = min(v0, 2.5)  # edge past the vehicle slowly
        # waiting to change lanes (e.g. behind an obstacle), keep room to pull out
        s0 = 6.0 if self.request is not None and self.lateral is None else 3.0
        a_cmd = idm_accel(v, v0, gap, v - v_lead, a_max=1.6, b_comf=2.5, headway_s=1.4, s0_m=s0,
                          lead_accel_mps2=a_lead)
        self.apply_controls(dt_s, a_cmd)

    def steer_towards(self, dt_s: float, kappa_cmd_1pm: float) -> None:
        """Steering: the curvature follows ``kappa_cmd_1pm`` (clipped to the steering lock) with a 0.12 s lag."""
        kappa_cmd = float(np.clip(kappa_cmd_1pm, -math.tan(0.5) / WHEELBASE_M, math.tan(0.5) / WHEELBASE_M))
        self.kappa_1pm += (kappa_cmd - self.kappa_1pm) * min(dt_s / 0.12, 1.0)

    def apply_controls(self, dt_s: float, a_cmd: float) -> None:
        """Acceleration ``a_cmd`` (clipped, jerk-limited) and the current curvature: one kinematic step (midpoint)."""
        road, v = self.road, self.speed_mps
        a_cmd = float(np.clip(a_cmd, -MAX_DECEL_MPS2, 2.0))
        # jerk limit: gentle when accelerating, quick when braking
        jerk = 4.0 if a_cmd > self.accel_mps2 else 25.0
        a = self.accel_mps2 + float(np.clip(a_cmd - self.accel_mps2, -jerk * dt_s, jerk * dt_s))
        v_new = max(v + a * dt_s, 0.0)
        a = (v_new - v) / dt_s

        # 4. integrate the kinematic model (midpoint)
        v_mid = 0.5 * (v + v_new)
        yaw_rate = v_mid * self.kappa_1pm
        yaw_mid = self.yaw_rad + 0.5 * yaw_rate * dt_s
        self.x_m += v_mid * math.cos(yaw_mid) * dt_s
        self.y_m += v_mid * math.sin(yaw_mid) * dt_s
        self.yaw_rad = math.remainder(self.yaw_rad + yaw_rate * dt_s, 2 * math.pi)
        self.speed_mps, self.accel_mps2, self.yaw_rate_radps = v_new, a, yaw_rate
        self.s_m, self.d_m = road.world_to_frenet(self.x_m, self.y_m, self.s_m)

    def cancel_request(self) -> None:
        """Withdraw a lane-change command whose manoeuvre has not started."""
        if self.lateral is None and self.request is not None:
            self.request, self.command = None, COMMAND_STRAIGHT
