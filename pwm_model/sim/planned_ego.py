"""The closed-loop ego: the synthetic world's kinematic bicycle, steered and driven by a tracker that follows the
latest plan (pure pursuit on the planned path, a speed controller on the planned speed profile), as nuPlan and
NAVSIM track plans. The route command keeps the expert's rule (it goes out once the target lane is free); it ends
when the ego has arrived in the target lane, whoever drove it there.
"""

from __future__ import annotations

import math

import numpy as np

from pwm_model.data.schema import COMMAND_STRAIGHT
from pwm_model.data.synthetic.agents import Agent
from pwm_model.data.synthetic.ego import EgoDriver
from pwm_model.geometry import from_ego_frame

SPEED_GAIN_1PS = 1.5  # acceleration per m/s of speed error
PREVIEW_S = 0.3  # the speed controller aims at the planned speed this far ahead (actuation lag)
ARRIVED_M = 0.6  # the lane change is done once the box centre is this close to the target lane's centre
MIN_LOOKAHEAD_M, MAX_LOOKAHEAD_M = 4.0, 25.0


class TrackedPlan:
    """A plan fixed in the world frame: the ego pose when it was made, then its K waypoints, with their times."""

    def __init__(self, t_s: float, x_m: float, y_m: float, yaw_rad: float, speed_mps: float,
                 waypoints_xyyaw: np.ndarray, waypoint_dt_s: float) -> None:
        wp = np.asarray(waypoints_xyyaw, np.float64).reshape(-1, 3)
        if not np.all(np.isfinite(wp)):
            raise ValueError("the plan holds NaN or infinite waypoints")
        xy = from_ego_frame(wp[:, :2], x_m, y_m, yaw_rad)
        self.t0_s = t_s
        self.xy_m = np.vstack([[x_m, y_m], xy])  # (K + 1, 2) from the pose at t0
        self.t_s = t_s + np.arange(len(self.xy_m)) * waypoint_dt_s
        seg = np.linalg.norm(np.diff(self.xy_m, axis=0), axis=1)
        self.arc_m = np.concatenate([[0.0], np.cumsum(seg)])
        # speed at each waypoint time: the current speed at t0, then the mean speed of the interval ending there
        self.speed_mps = np.concatenate([[speed_mps], seg / waypoint_dt_s])

    def speed_at(self, t_s: float) -> float:
        return float(np.interp(t_s, self.t_s, self.speed_mps))

    def point_ahead(self, x_m: float, y_m: float, lookahead_m: float) -> np.ndarray:
        """The point ``lookahead_m`` along the path beyond the path point nearest (x, y) (extrapolated past its end)."""
        d = np.linalg.norm(self.xy_m - np.array([x_m, y_m]), axis=1)
        i = int(np.argmin(d))
        target = self.arc_m[i] + lookahead_m
        if target <= self.arc_m[-1] and self.arc_m[-1] > 1e-6:
            return np.array([np.interp(target, self.arc_m, self.xy_m[:, 0]),
                             np.interp(target, self.arc_m, self.xy_m[:, 1])])
        end, prev = self.xy_m[-1], self.xy_m[-2]
        heading = end - prev
        norm = float(np.linalg.norm(heading))
        if norm < 1e-6:
            return end.copy()
        return end + heading / norm * (target - self.arc_m[-1])


class PlannedEgo(EgoDriver):
    """``EgoDriver`` whose controls come from ``follow(plan)`` instead of its own driver."""

    plan: TrackedPlan | None = None

    @classmethod
    def take_over(cls, driver: EgoDriver) -> PlannedEgo:
        """The same car in the same state (lane-change request and command included), from now on tracking plans."""
        ego = cls.__new__(cls)
        ego.__dict__.update(driver.__dict__)
        ego.lateral = None  # a manoeuvre the expert had begun is the planner's to finish
        return ego

    def follow(self, plan: TrackedPlan) -> None:
        self.plan = plan

    def step(self, dt_s: float, t_s: float, agents: list[Agent]) -> None:
        road = self.road
        self._update_command(t_s, agents)
        v = self.speed_mps
        if self.plan is None:  # no plan yet: hold the wheel and the speed
            self.apply_controls(dt_s, 0.0)
            return
        look_m = float(np.clip(0.9 * v, MIN_LOOKAHEAD_M, MAX_LOOKAHEAD_M))
        tx, ty = self.plan.point_ahead(self.x_m, self.y_m, look_m)
        c, s = math.cos(self.yaw_rad), math.sin(self.yaw_rad)
        dx, dy = tx - self.x_m, ty - self.y_m
        x_l, y_l = c * dx + s * dy, -s * dx + c * dy
        if x_l > 0.5:
            self.steer_towards(dt_s, 2.0 * y_l / max(x_l * x_l + y_l * y_l, 1.0))
        v_target = self.plan.speed_at(t_s + PREVIEW_S)
        self.apply_controls(dt_s, SPEED_GAIN_1PS * (v_target - v))
        self.lane = road.lane_of(self.center_d_m)

    def _update_command(self, t_s: float, agents: list[Agent]) -> None:
        req = self.request
        if req is None:
            return
        self._announce_if_free(t_s, agents)
        if req.announced and abs(self.center_d_m - self.road.lane_d_m(req.target_lane)) < ARRIVED_M:
            self.request, self.command = None, COMMAND_STRAIGHT
            self.lane = req.target_lane
            self.lane_changes_done += 1

    def cancel_request(self) -> None:
        if self.request is not None:
            self.request, self.command = None, COMMAND_STRAIGHT
