"""One closed-loop drive: the planner sees the camera rendered from the ego's simulated pose and its plan drives.

    log = run_drive(seed=3, planner=KinematicPlanner("ctra", cfg), cfg=cfg, seconds=20.0)

The synthetic world (``pwm_model.data.synthetic``) steps at its physics rate; every camera frame is rendered from
where the ego really is; every ``plan_every_s`` the planner gets the frame, the stamp and the ego state (the same
``EgoInput`` the vehicle node builds from odometry) and its plan replaces the one being tracked. For the first
``warmup_s`` the world's own driver (the expert) drives while the planner watches, so a planner with a frame history
starts informed (as NAVSIM starts from a logged state). The expert planner is that driver all the way.
``reactive`` other vehicles follow the ego with IDM (they see it); non-reactive ones drive as if it were not there.
The drive stops at the first collision the ego causes, or once the ego has left the road (a route deviation, as
Bench2Drive ends a route).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from pwm_model.config import PwmConfig
from pwm_model.data.contract import CommandAge, EgoInput
from pwm_model.data.synthetic.ego import EGO_LENGTH_M
from pwm_model.data.synthetic.world import World
from pwm_model.errors import DataError
from pwm_model.geometry import box_footprint, polygons_intersect
from pwm_model.sim.planned_ego import PlannedEgo, TrackedPlan
from pwm_model.sim.planners import Planner

WARMUP_S = 1.0
OFF_ROUTE_M = 3.0  # the drive ends once the box centre is this far beyond the outer lane edges (route deviation)


@dataclass
class Tick:
    """The world at one camera frame (world frame, SI units)."""

    t_s: float
    ego_xyyaw: tuple[float, float, float]  # rear axle
    speed_mps: float
    accel_mps2: float
    yaw_rate_radps: float
    s_m: float  # box centre along the road
    d_m: float  # box centre left of the divider (forward lanes at d < 0)
    heading_err_rad: float  # ego heading minus the road's
    command: int
    ego_box: np.ndarray  # (7,) x, y, z, l, w, h, yaw
    agent_boxes: np.ndarray  # (N, 7)
    agent_ids: np.ndarray  # (N,)
    agent_speed_mps: np.ndarray  # (N,) along their yaw
    agent_parked: np.ndarray  # (N,) bool
    plan_xy_m: np.ndarray | None = None  # (K + 1, 2) the plan made at this frame, from the ego pose
    plan_t_s: np.ndarray | None = None
    driven_by_planner: bool = False


@dataclass
class Collision:
    t_s: float
    frame: int
    track_id: int
    static: bool  # a parked vehicle
    at_fault: bool
    kind: str  # "front", "side" or "rear" (where on the ego the other box is)


@dataclass
class DriveLog:
    seed: int
    planner: str
    seconds: float
    reactive: bool
    frame_dt_s: float
    ticks: list[Tick] = field(default_factory=list)
    collisions: list[Collision] = field(default_factory=list)
    frames_rgb: dict[int, np.ndarray] = field(default_factory=dict)  # frame index -> image (keep_frames; the suite
    # keeps only those of infractions once the drive is scored)
    ended_early: bool = False
    end_reason: str = ""
    plan_ms: list[float] = field(default_factory=list)
    lane_width_m: float = 3.5
    drivable_d_m: tuple[float, float] = (-7.0, 3.5)  # right and left edge of the lanes
    lane_centres_d_m: tuple[float, ...] = ()
    wall_s: float = 0.0
    events: list[dict] = field(default_factory=list)  # the world's logged events (family, precursor_s, onset_s)


def _collision(tick: Tick, frame: int) -> list[Collision]:
    if len(tick.agent_boxes) == 0:
        return []
    mine = box_footprint(tick.ego_box[None])[0]
    out = []
    x, y, yaw = tick.ego_xyyaw
    c, s = np.cos(yaw), np.sin(yaw)
    for box, tid, parked in zip(tick.agent_boxes, tick.agent_ids, tick.agent_parked):
        if np.hypot(box[0] - tick.ego_box[0], box[1] - tick.ego_box[1]) > 15.0:
            continue
        if not polygons_intersect(mine, box_footprint(box[None])[0]):
            continue
        # where the other box is, seen from the ego's box centre: ahead, beside or behind
        dx, dy = box[0] - tick.ego_box[0], box[1] - tick.ego_box[1]
        along = c * dx + s * dy
        kind = "front" if along > EGO_LENGTH_M / 2 else ("rear" if along < -EGO_LENGTH_M / 2 else "side")
        # not the ego's fault: hit from behind, or hit while standing still
        at_fault = not (kind == "rear" or tick.speed_mps < 0.05)
        out.append(Collision(tick.t_s, frame, int(tid), bool(parked), at_fault, kind))
    return out


def _tick(world: World, driven: bool) -> Tick:
    ego, road = world.ego, world.road
    views = world.views()
    boxes = np.array([v.box() for v in views], np.float64).reshape(-1, 7)
    by_id = {a.track_id: a for a in world.agents}
    heading_err = float(np.remainder(ego.yaw_rad - float(road.heading_at(ego.s_m)) + np.pi, 2 * np.pi) - np.pi)
    return Tick(t_s=world.t_s, ego_xyyaw=(ego.x_m, ego.y_m, ego.yaw_rad), speed_mps=ego.speed_mps,
                accel_mps2=ego.accel_mps2, yaw_rate_radps=ego.yaw_rate_radps, s_m=ego.center_s_m,
                d_m=ego.center_d_m, heading_err_rad=heading_err, command=int(ego.command),
                ego_box=np.asarray(ego.box(), np.float64), agent_boxes=boxes,
                agent_ids=np.array([v.track_id for v in views], np.int64),
                agent_speed_mps=np.array([by_id[v.track_id].speed_mps for v in views], np.float64),
                agent_parked=np.array([by_id[v.track_id].parked for v in views], bool), driven_by_planner=driven)


def run_drive(seed: int, planner: Planner | None, cfg: PwmConfig, *, seconds: float = 20.0, reactive: bool = True,
              plan_every_s: float | None = None, warmup_s: float = WARMUP_S, keep_frames: bool = True,
              on_frame: Callable[[int, int], None] | None = None, agent_idm: dict[str, float] | None = None
              ) -> DriveLog:
    """Drive scenario ``seed`` for ``seconds`` with ``planner`` (None: the expert). See the module docstring.
    ``agent_idm`` sets the other vehicles' IDM parameters (``idm_accel``'s a_max, b_comf, headway_s, s0_m)."""
    started = time.monotonic()
    world = World(seed, cfg.camera, seconds=seconds)
    world.agents_see_ego = reactive
    world.agent_idm = dict(agent_idm or {})
    renderer = world.renderer() if planner is not None or keep_frames else None
    road = world.road
    name = "expert" if planner is None else planner.name
    log = DriveLog(seed=seed, planner=name, seconds=seconds, reactive=reactive, frame_dt_s=world.frame_dt_s,
                   lane_width_m=road.lane_width_m, drivable_d_m=(road.right_edge_d_m, road.left_edge_d_m),
                   lane_centres_d_m=tuple(road.lane_d_m(i) for i in range(road.n_forward)))
    plan_every = max(1, round((plan_every_s or cfg.model_dt_s) / world.frame_dt_s))
    n_frames = max(1, round(seconds / world.frame_dt_s))
    warm_frames = round(warmup_s / world.frame_dt_s)
    if planner is not None:
        planner.reset()
    command_age = CommandAge()
    for i in range(n_frames):
        if i:
            world.step_frame()
        if planner is not None and i == warm_frames:
            world.ego = PlannedEgo.take_over(world.ego)  # the planner drives from here
        driven = planner is not None and i >= warm_frames
        tick = _tick(world, driven)
        frame = None
        if renderer is not None:
            frame = world.render(renderer)
            if keep_frames:
                log.frames_rgb[i] = frame
        if planner is not None and i % plan_every == 0:
            ego = world.ego
            command_age.see(int(ego.command), world.t_ns)  # seen at planning ticks, as the node sees it over ROS
            t0 = time.perf_counter()
            plan = planner.step(frame, world.t_ns, EgoInput(speed_mps=ego.speed_mps, accel_mps2=ego.accel_mps2,
                                                          command=int(ego.command),
                                                          yaw_rate_radps=ego.yaw_rate_radps,
                                                          command_age_s=command_age.age_s(world.t_ns)))
            log.plan_ms.append((time.perf_counter() - t0) * 1e3)
            try:
                tracked = TrackedPlan(world.t_s, ego.x_m, ego.y_m, ego.yaw_rad, ego.speed_mps, plan,
                                      planner.waypoint_dt_s)
            except ValueError as exc:
                raise DataError(f"planner {name} returned a bad plan at {world.t_s:.1f} s of drive {seed}: {exc}") \
                    from exc
            tick.plan_xy_m, tick.plan_t_s = tracked.xy_m, tracked.t_s
            if isinstance(ego, PlannedEgo):
                ego.follow(tracked)
        log.ticks.append(tick)
        hits = _collision(tick, i)
        log.collisions.extend(h for h in hits if not any(
            c.track_id == h.track_id and c.t_s >= h.t_s - 1.0 for c in log.collisions))  # one per contact
        if on_frame is not None:
            on_frame(i + 1, n_frames)
        if any(h.at_fault for h in hits):
            log.ended_early, log.end_reason = i < n_frames - 1, "at-fault collision"
            break
        right, left = log.drivable_d_m
        if driven and not right - OFF_ROUTE_M < tick.d_m < left + OFF_ROUTE_M:
            log.ended_early, log.end_reason = i < n_frames - 1, "left the road"  # route deviation ends the route
            break
    log.wall_s = time.monotonic() - started
    log.events = [dict(e) for e in world.events]
    return log
