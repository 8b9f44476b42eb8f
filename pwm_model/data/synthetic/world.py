"""The synthetic driving world: road, scenery, ego, traffic and scenario events, stepped at a fixed rate.

    for sample in simulate_drive(seed=0, seconds=30.0, camera=preset("tiny").camera):
        sample.image_rgb, sample.ego, sample.command, sample.boxes, sample.scenario

Everything is drawn from the seed (``numpy.random.SeedSequence``): the same seed gives the same images and states.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

from pwm_model.config import CameraConfig
from pwm_model.data.schema import Boxes, DriveSample, EgoState
from pwm_model.data.synthetic.agents import (
    INDICATOR_LEFT,
    INDICATOR_RIGHT,
    Agent,
    LateralMove,
    VehicleView,
    sample_dims,
)
from pwm_model.data.synthetic.appearance import sample_appearance, sample_car_color
from pwm_model.data.synthetic.ego import EGO_LENGTH_M, EGO_WIDTH_M, EgoDriver
from pwm_model.data.synthetic.render import Renderer
from pwm_model.data.synthetic.road import generate_road
from pwm_model.data.synthetic.scenarios import SCENARIOS, AmbientTraffic, Scheduler
from pwm_model.data.synthetic.scenery import generate_scenery
from pwm_model.data.synthetic.shift import (
    ShiftedRenderer,
    check_shift,
    make_renderer,
    shift_appearance,
    shift_scenery,
)
from pwm_model.errors import ConfigError
from pwm_model.geometry import PinholeCamera, to_ego_frame

EPOCH_NS = 1_700_000_000 * 1_000_000_000  # stamp of frame 0 of every synthetic drive
SIM_DT_S = 0.05  # physics step (frames are an integer number of steps apart)
MAX_SECONDS = 3600.0


class World:
    """One drive's world. ``sample(renderer)`` gives the current frame; ``step_frame()`` advances one frame.

    ``shift`` (one of ``SHIFTS``) changes only the rendering: appearance, scenery colours or the rendering camera.
    """

    def __init__(self, seed: int, camera: CameraConfig, *, scenario: str | None = None, seconds: float = 60.0,
                 shift: str | None = None) -> None:
        check_drive_args(seed, seconds, scenario, shift)
        self.seed, self.scenario, self.camera, self.shift = int(seed), scenario, camera, shift
        streams = [np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(6)]
        r_road, r_app, r_scenery, r_events, r_traffic, self.rng = streams
        self.appearance = sample_appearance(r_app)
        style = {"curve": "curvy", "cruise": "gentle"}.get(scenario or "") or str(
            self.rng.choice(["mixed", "mixed", "curvy", "gentle"]))
        v_lo, v_hi = {"curvy": (12.0, 19.0), "mixed": (13.0, 23.0), "gentle": (18.0, 26.0)}[style]
        v_limit = float(self.rng.uniform(v_lo, v_hi))
        self.road = generate_road(r_road, v_limit * 1.15 * seconds + 700.0, style)
        self.scenery = generate_scenery(r_scenery, self.road, self.appearance.grass_patch)
        # after every draw from the seed's streams: a shift never changes what the drive does
        self.appearance = shift_appearance(self.appearance, shift)
        self.scenery = shift_scenery(self.scenery, shift)
        lane = int(self.rng.integers(self.road.n_forward))
        if scenario == "pull_out":
            lane = self.road.n_forward - 1  # cars pull out from the kerb side: start next to it
        self.ego = EgoDriver(self.road, lane, 20.0, 0.0, v_limit)
        self.ego.speed_mps = min(0.9 * v_limit, self.ego.curve_speed_mps())
        self.agents: list[Agent] = []
        self.reserved_lane: int | None = None  # a lane an event needs clear of ambient traffic
        self.agents_see_ego = True  # False: the others drive as if the ego were not there (non-reactive closed loop)
        self.agent_idm: dict[str, float] = {}  # the others' IDM parameters to override (a_max, b_comf, headway_s)
        self._next_id = 1
        self.pinhole = PinholeCamera.from_config(camera)
        self.t_s = 0.0
        self.frame_index = 0
        self.frame_dt_s = 1.0 / camera.frame_rate_hz
        self.substeps = max(1, math.ceil(self.frame_dt_s / SIM_DT_S - 1e-9))
        self.events: list[dict[str, float | str]] = []  # every precursor event's family, precursor and onset (s)
        self.scheduler = Scheduler(r_events, scenario)
        self.traffic = AmbientTraffic(r_traffic, float(self.rng.uniform(0.4, 1.0)))
        self.traffic.populate(self)

    # --- helpers used by events and traffic ----------------------------------------------------------
    def spawn(self, kind: str, s_m: float, d_m: float, speed_mps: float, *, direction: int = 1,
              parked: bool = False, role: str = "ambient") -> Agent:
        length, width, height = sample_dims(self.rng, kind)
        a = Agent(track_id=self._next_id, kind=kind, length_m=length, width_m=width, height_m=height,
                  color_rgb=sample_car_color(self.rng), s_m=s_m, d_m=d_m, speed_mps=speed_mps,
                  v_desired_mps=speed_mps, direction=direction, parked=parked, role=role)
        self._next_id += 1
        self.agents.append(a)
        return a

    def mark_event(self, family: str, key: str) -> None:
        """Log the current time as the precursor (a new record) or the onset (the last record) of an event."""
        if key == "precursor":
            self.events.append({"family": family, "precursor_s": round(self.t_s, 6)})
        elif self.events and self.events[-1]["family"] == family and "onset_s" not in self.events[-1]:
            self.events[-1]["onset_s"] = round(self.t_s, 6)

    def agent_by_id(self, track_id: int | None) -> Agent | None:
        for a in self.agents:
            if a.track_id == track_id:
                return a
        return None

    def lane_occupied(self, d_lane_m: float, s0_m: float, s1_m: float, *, direction: int = 1) -> bool:
        """Any vehicle of that direction (parked ones count as +1) in the lane between s0 and s1?"""
        half = self.road.lane_width_m / 2
        for a in self.agents:
            if a.direction == direction and abs(a.d_m - d_lane_m) < half + a.width_m / 2 and s0_m <= a.s_m <= s1_m:
                return True
        return False

    def clear_lane_ahead(self, lane: int, s0_m: float, s1_m: float) -> None:
        """Ask ambient vehicles in forward ``lane`` between s0 and s1 to change to a free neighbouring lane
        (not the ego's): indicator for 1 s, then a 3 s lane change."""
        d_lane = self.road.lane_d_m(lane)
        for a in self.agents:
            if (a.role != "ambient" or a.direction < 0 or a.parked or a.lateral is not None
                    or abs(a.d_m - d_lane) > self.road.lane_width_m / 2 or not s0_m <= a.s_m <= s1_m):
                continue
            for target in (lane - 1, lane + 1):
                if not 0 <= target < self.road.n_forward or target == self.ego.lane:
                    continue
                if self.lane_occupied(self.road.lane_d_m(target), a.s_m - 25.0, a.s_m + 25.0):
                    continue
                a.set_indicator(INDICATOR_LEFT if target < lane else INDICATOR_RIGHT, self.t_s)
                a.lateral = LateralMove(a.d_m, self.road.lane_d_m(target), self.t_s + 1.0, 3.0)
                a.extra["indicator_until_done"] = True
                break

    def in_view(self, agent: Agent, max_dist_m: float = 170.0) -> bool:
        """Is the vehicle's centre inside the camera image and within ``max_dist_m``?"""
        v = agent.view(self.road, self.t_s, False)
        p = to_ego_frame(np.array([v.x_m, v.y_m]), self.ego.x_m, self.ego.y_m, self.ego.yaw_rad)
        if not 0.0 < p[0] < max_dist_m:
            return False
        uv, front = self.pinhole.project(np.array([p[0], p[1], v.height_m / 2]))
        return bool(front) and bool(self.pinhole.in_image(uv))

    # --- stepping ------------------------------------------------------------------------------------
    def leader_of(self, a: Agent) -> tuple[float | None, float, float]:
        """(gap, speed, acceleration) of the vehicle ``a`` follows (the ego included), or (None, 0, 0)."""
        best_gap, best_v, best_a = None, 0.0, 0.0
        ego = self.ego
        others = [(b.s_m, b.d_m, b.width_m, b.length_m, b.speed_mps, b.accel_mps2, b.direction)
                  for b in self.agents if b is not a]
        if self.agents_see_ego:
            others.append((ego.center_s_m, ego.center_d_m, EGO_WIDTH_M, EGO_LENGTH_M, ego.speed_mps, ego.accel_mps2,
                           1))
        d_a = a.lateral.d1_m if a.lateral is not None else a.d_m
        for s, d, w, length, v, acc, direction in others:
            if direction != a.direction:
                continue
            ds = (s - a.s_m) * a.direction
            if ds <= 0:
                continue
            reach = (a.width_m + w) / 2 + 0.2
            if abs(d - a.d_m) >= reach and abs(d - d_a) >= reach:
                continue
            gap = ds - (a.length_m + length) / 2
            if best_gap is None or gap < best_gap:
                best_gap, best_v, best_a = gap, v, acc
        return best_gap, best_v, best_a

    def _physics_step(self, dt_s: float) -> None:
        leaders = [self.leader_of(a) for a in self.agents]
        self.ego.step(dt_s, self.t_s, self.agents)
        for a, (gap, v_lead, a_lead) in zip(self.agents, leaders):
            a.step(dt_s, self.t_s, gap, v_lead, a_lead, self.agent_idm or None)
            if not a.extra.get("scripted_lamps"):
                a.brake_lamp = (not a.parked) and (a.accel_mps2 < -1.0 or (a.brake_lamp and a.accel_mps2 < -0.3)
                                                   or a.speed_mps < 0.3)
        self.t_s += dt_s

    def step_frame(self) -> None:
        """Advance the world by one camera frame."""
        self.scheduler.update(self)
        self.traffic.update(self)
        dt = self.frame_dt_s / self.substeps
        for _ in range(self.substeps):
            self._physics_step(dt)
        self.frame_index += 1
        self.t_s = self.frame_index * self.frame_dt_s  # no drift from summing steps

    # --- output --------------------------------------------------------------------------------------
    @property
    def t_ns(self) -> int:
        return EPOCH_NS + round(self.frame_index * 1e9 / self.camera.frame_rate_hz)

    def views(self) -> list[VehicleView]:
        if not self.agents:
            return []
        xy, h = self.road.frenet_to_world(np.array([a.s_m for a in self.agents]),
                                          np.array([a.d_m for a in self.agents]))
        return [a.view(self.road, self.t_s, self.appearance.lamps_on, pose=p)
                for a, p in zip(self.agents, zip(xy[:, 0].tolist(), xy[:, 1].tolist(), h.tolist()))]

    def renderer(self, width_px: int | None = None, height_px: int | None = None) -> Renderer | ShiftedRenderer:
        """The drive's front camera renderer (the shifted rendering camera under camera_mount)."""
        return make_renderer(self.camera, self.road, self.scenery, self.appearance, self.shift, width_px=width_px,
                             height_px=height_px)

    def render(self, renderer: Renderer | ShiftedRenderer, views: list[VehicleView] | None = None) -> np.ndarray:
        ego = self.ego
        return renderer.render(ego.x_m, ego.y_m, ego.yaw_rad, self.views() if views is None else views,
                               s_hint_m=ego.s_m + self.camera.mount_x_m)

    def sample(self, renderer: Renderer | ShiftedRenderer | None) -> DriveSample:
        """The current frame (``renderer=None`` skips the image: a 0 x 0 array)."""
        views = self.views()
        image = self.render(renderer, views) if renderer is not None else np.zeros((0, 0, 3), np.uint8)
        boxes = Boxes(
            xyz_lwh_yaw=np.array([v.box() for v in views], np.float32).reshape(-1, 7),
            track_ids=np.array([v.track_id for v in views], np.int32),
            labels=tuple(v.label for v in views),
        )
        ego = self.ego
        state = EgoState(t_ns=self.t_ns, x_m=ego.x_m, y_m=ego.y_m, yaw_rad=ego.yaw_rad, speed_mps=ego.speed_mps,
                         accel_mps2=ego.accel_mps2, yaw_rate_radps=ego.yaw_rate_radps)
        return DriveSample(t_ns=self.t_ns, image_rgb=image, ego=state, command=int(ego.command), boxes=boxes,
                           frame_index=self.frame_index, scenario=self.scheduler.label(self))


def check_drive_args(seed: int, seconds: float, scenario: str | None, shift: str | None = None) -> None:
    """Raise ``ConfigError`` (one sentence) for a bad seed, duration, scenario or shift name."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds) or not 0 < seconds <= MAX_SECONDS:
        raise ConfigError(f"seconds must be a number in (0, {MAX_SECONDS:g}], got {seconds!r}")
    if scenario is not None and scenario not in SCENARIOS:
        raise ConfigError(f"unknown scenario {scenario!r}: choose one of {', '.join(SCENARIOS)}")
    check_shift(shift)


def simulate_drive(seed: int, seconds: float, camera: CameraConfig, *, scenario: str | None = None,
                   shift: str | None = None) -> Iterator[DriveSample]:
    """Frames of one synthetic drive at ``camera.frame_rate_hz``, rendered at the camera's resolution.

    ``scenario`` restricts the drive's events to one family of ``SCENARIOS`` (None: a mix of all of them).
    ``shift`` renders the drive in conditions the training world never samples (one of ``SHIFTS``, see
    ``shift``); the traffic, ego motion, labels and commands stay those of the nominal drive (None).
    Arguments are checked at the call (``ConfigError``); frames are produced lazily.
    """
    check_drive_args(seed, seconds, scenario, shift)
    camera.validate("camera")
    n_frames = max(1, round(seconds * camera.frame_rate_hz))
    return _frames(seed, seconds, camera, scenario, n_frames, shift)


def _frames(seed: int, seconds: float, camera: CameraConfig, scenario: str | None, n_frames: int,
            shift: str | None = None) -> Iterator[DriveSample]:
    world = World(seed, camera, scenario=scenario, seconds=seconds, shift=shift)
    renderer = world.renderer()
    for i in range(n_frames):
        if i:
            world.step_frame()
        yield world.sample(renderer)
