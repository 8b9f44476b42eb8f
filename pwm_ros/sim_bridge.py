"""``RosPlanner``: the closed loop's ``Planner`` over ROS 2, so that any planner node can drive the synthetic world.

At each planning tick it publishes ``/clock`` (the tick's time), the route command (``std_msgs/UInt8``), odometry
(``nav_msgs/Odometry``: dead-reckoned pose, ``twist.linear.x`` speed, ``twist.angular.z`` yaw rate) and the rendered
camera frame (``sensor_msgs/Image`` rgb8, or ``CompressedImage`` JPEG on ``<camera>/compressed``), all stamped with
the tick, then takes the planner's ``nav_msgs/Path`` in ``base_link`` stamped with that frame.

Lock-step (the default): simulated time stands still until that plan has come, so the score does not depend on CPU
speed. The inputs reach the planner before the frame: after odometry, command and ``/clock`` the bridge calls the
planner node's ``get_parameters`` service and publishes the frame only once it answered (rclpy and rclcpp executors
take ready subscriptions before services, so the planner has read them by then). A frame without an answer is sent
again every ``RESEND_S`` (a best-effort camera subscription may lose one; a planner skips a frame it already planned),
and after ``timeout_s`` the drive ends with one sentence naming the trajectory topic.

``nav_msgs/Odometry`` carries no acceleration: before each tick's sample goes one stamped ``ACCEL_BASELINE_S``
earlier whose speed is the tick's speed less acceleration times that baseline, so that a node which differences the
speed over ``ACCEL_BASELINE_S`` (``pwm_node`` does) reads the world's acceleration, as the in-process loop gives it.

Realtime (``realtime=True``): the world runs on at ``rate`` times wall-clock speed while the planner thinks. A plan
that comes before the next planning tick is used as if it had come at once; one that comes later is late: the
freshest plan received is then used, re-expressed in the current ``base_link`` by dead reckoning, and counted.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import rclpy
from geometry_msgs.msg import Quaternion
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.srv import GetParameters
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import DurabilityPolicy, QoSProfile, ReliabilityPolicy
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header, UInt8

from pwm_model.config import PwmConfig, TopicsConfig
from pwm_model.data.bag_format import CAMERA_FRAME, EGO_FRAME, WORLD_FRAME
from pwm_model.data.contract import EgoInput
from pwm_model.errors import ConfigError, DataError, PwmError
from pwm_model.geometry import from_ego_frame, quat_from_yaw, to_ego_frame
from pwm_ros import conversions
from pwm_ros.odometry import ACCEL_BASELINE_S
from pwm_ros.params import NODE_NAME

log = logging.getLogger("pwm_sim")

CLOCK_TOPIC = "/clock"
RESEND_S = 1.0  # a frame without an answer is published again this often (lock-step)
SETTLE_S = 0.5  # once the planner's endpoints are seen, this long for it to see ours too
SPIN_S = 0.01
CLOCK_PERIOD_S = 0.01  # /clock while the world runs on (realtime)
WAYPOINT_DT_TOLERANCE_S = 1e-3
# Reliable, volatile, keep last: serves reliable and best-effort subscribers (REP-2003, as pwm_replay publishes).
INPUT_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
CLOCK_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
PLAN_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


@dataclass
class BridgeTopics:
    """Where the bridge publishes and listens (the planner node's defaults)."""

    camera: str = TopicsConfig.image  # sensor_msgs/Image; compressed: <camera>/compressed
    odom: str = TopicsConfig.odometry
    command: str = TopicsConfig.command
    node: str = "/" + NODE_NAME  # the planner node: its get_parameters service orders inputs before the frame
    trajectory: str = ""  # nav_msgs/Path in base_link; empty: <node>/trajectory

    def __post_init__(self) -> None:
        self.node = "/" + self.node.strip("/")
        self.trajectory = self.trajectory or f"{self.node}/trajectory"


@dataclass
class BridgeStats:
    """What happened on the wire, over every drive."""

    ticks: int = 0
    plans: int = 0  # plans used for the tick they answer
    resent_frames: int = 0
    late_plans: int = 0  # realtime: came after the next planning tick
    ticks_without_plan: int = 0  # realtime: no plan for the tick by its deadline
    latency_ms: list[float] = field(default_factory=list)  # frame published -> its plan received (wall clock)

    def as_dict(self, realtime: bool) -> dict[str, object]:
        lat = np.array(self.latency_ms) if self.latency_ms else np.array([math.nan])
        out: dict[str, object] = {"mode": "realtime" if realtime else "lock-step", "ticks": self.ticks,
                                  "plans": self.plans, "resent_frames": self.resent_frames,
                                  "latency_p50_ms": round(float(np.median(lat)), 2),
                                  "latency_max_ms": round(float(np.max(lat)), 2)}
        if realtime:
            out.update(late_plans=self.late_plans, ticks_without_plan=self.ticks_without_plan)
        return out


class _DeadReckoning:
    """The ego pose in the odometry frame, integrated from speed and yaw rate between ticks (midpoint rule)."""

    def __init__(self) -> None:
        self.poses: dict[int, tuple[float, float, float]] = {}
        self._last: tuple[int, float, float] | None = None  # t_ns, speed, yaw rate
        self.pose = (0.0, 0.0, 0.0)

    def update(self, t_ns: int, speed_mps: float, yaw_rate_radps: float) -> tuple[float, float, float]:
        if self._last is not None and t_ns > self._last[0]:
            t0, v0, r0 = self._last
            dt_s = (t_ns - t0) / 1e9
            x, y, yaw = self.pose
            yaw1 = yaw + 0.5 * (r0 + yaw_rate_radps) * dt_s
            dist = 0.5 * (v0 + speed_mps) * dt_s
            mid = 0.5 * (yaw + yaw1)
            self.pose = (x + dist * math.cos(mid), y + dist * math.sin(mid), yaw1)
        self._last = (t_ns, speed_mps, yaw_rate_radps)
        self.poses[t_ns] = self.pose
        return self.pose

    def moved(self, xyyaw: np.ndarray, dt_s: float, from_t_ns: int, to_t_ns: int) -> np.ndarray:
        """A plan made at ``from_t_ns`` (waypoints every ``dt_s`` in base_link then) as the same path and timing
        seen at ``to_t_ns``: in base_link now, sampled every ``dt_s`` from now (extrapolated past its end)."""
        (x0, y0, yaw0), (x1, y1, yaw1) = self.poses[from_t_ns], self.poses[to_t_ns]
        pts = np.vstack([[0.0, 0.0, 0.0], np.asarray(xyyaw, np.float64)])
        xy = to_ego_frame(from_ego_frame(pts[:, :2], x0, y0, yaw0), x1, y1, yaw1)
        yaw = np.unwrap(pts[:, 2]) + (yaw0 - yaw1)
        t_s = np.arange(len(pts)) * dt_s
        want_s = (to_t_ns - from_t_ns) / 1e9 + np.arange(1, len(pts)) * dt_s
        return np.column_stack([_resample(t_s, v, want_s) for v in (xy[:, 0], xy[:, 1], yaw)])


def _resample(t_s: np.ndarray, values: np.ndarray, want_s: np.ndarray) -> np.ndarray:
    """Linear interpolation at ``want_s``, extrapolating the last segment beyond the end."""
    out = np.interp(want_s, t_s, values)
    if len(t_s) > 1:
        beyond = want_s > t_s[-1]
        slope = (values[-1] - values[-2]) / (t_s[-1] - t_s[-2])
        out[beyond] = values[-1] + slope * (want_s[beyond] - t_s[-1])
    return out


class RosPlanner:
    """A ``Planner`` (``pwm_model.sim.planners``) whose plans come from a ROS 2 node; see the module docstring.

    ``watch`` is called while waiting (e.g. to raise when a planner process started for the run has exited).
    """

    def __init__(self, cfg: PwmConfig, *, name: str = "ROS 2 planner", topics: BridgeTopics | None = None,
                 compressed: bool = False, realtime: bool = False, rate: float = 1.0, timeout_s: float = 10.0,
                 wait_s: float = 30.0, base_frame: str = EGO_FRAME, plan_period_s: float | None = None,
                 context: object | None = None, watch: Callable[[], None] | None = None) -> None:
        for what, value in (("timeout_s", timeout_s), ("wait_s", wait_s), ("rate", rate)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{what} must be a positive number, got {value!r}")
        self.name, self.waypoint_dt_s = name, float(cfg.data.waypoint_dt_s)
        self.num_waypoints = int(cfg.data.num_waypoints)
        self.topics = topics or BridgeTopics()
        self.compressed, self.realtime, self.rate = compressed, realtime, float(rate)
        self.timeout_s, self.wait_s, self.base_frame = float(timeout_s), float(wait_s), base_frame
        self.period_ns = int(round((plan_period_s or cfg.model_dt_s) * 1e9))
        self.stats = BridgeStats()
        self._watch = watch
        self._node = rclpy.create_node("pwm_sim", context=context)
        self._executor = SingleThreadedExecutor(context=context)
        self._executor.add_node(self._node)
        t = self.topics
        self.camera_topic = t.camera.rstrip("/") + "/compressed" if compressed else t.camera
        self._camera = self._node.create_publisher(CompressedImage if compressed else Image, self.camera_topic,
                                                   INPUT_QOS)
        self._odom = self._node.create_publisher(Odometry, t.odom, INPUT_QOS)
        self._command = self._node.create_publisher(UInt8, t.command, INPUT_QOS)
        self._clock = self._node.create_publisher(Clock, CLOCK_TOPIC, CLOCK_QOS)
        self._plans: dict[int, tuple[Path, float]] = {}  # stamp -> (path, wall time received)
        self._plan_sub = self._node.create_subscription(Path, t.trajectory, self._on_plan, PLAN_QOS)
        self._params = self._node.create_client(GetParameters, f"{t.node}/get_parameters")
        self._barrier = False  # set once the service is seen
        self._connected = False
        self._closed = False
        self._dr = _DeadReckoning()
        self._sent_s: dict[int, float] = {}
        self._wall_t0: float | None = None  # realtime: wall time of simulated t = 0
        self._clock_ns = -1  # the time last published on /clock
        self._stray_ns: int | None = None  # stamp of the last Path that answered no frame of this drive

    # --- the Planner protocol -----------------------------------------------------------------------
    def reset(self) -> None:
        self._plans.clear()
        self._sent_s.clear()
        self._dr = _DeadReckoning()
        self._wall_t0, self._clock_ns, self._stray_ns = None, -1, None

    def step(self, frame_rgb: np.ndarray | None, t_ns: int, ego: EgoInput) -> np.ndarray:
        if frame_rgb is None:
            raise ConfigError("a ROS 2 planner needs the camera frames (render them)")
        if not self._connected:
            self._connect()
        t_ns = int(t_ns)
        self.stats.ticks += 1
        pose = self._dr.update(t_ns, float(ego.speed_mps), float(ego.yaw_rate_radps))
        frame = (conversions.rgb_to_compressed(frame_rgb, t_ns, CAMERA_FRAME) if self.compressed else
                 conversions.rgb_to_image(frame_rgb, t_ns, CAMERA_FRAME))
        if self.realtime:
            return self._step_realtime(t_ns, ego, pose, frame)
        self._publish_inputs(t_ns, ego, pose)
        self._order_inputs()
        self._publish_frame(t_ns, frame)
        path = self._wait_plan(t_ns, frame)
        self.stats.plans += 1
        return self._waypoints(path)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._executor.shutdown(timeout_sec=1.0)
        self._node.destroy_node()

    def report(self) -> dict[str, object]:
        return self.stats.as_dict(self.realtime)

    # --- wiring -------------------------------------------------------------------------------------
    def _spin(self, seconds: float = SPIN_S) -> None:
        self._executor.spin_once(timeout_sec=seconds)
        if self._watch is not None:
            self._watch()

    def _connect(self) -> None:
        """Wait for the planner's camera subscription and trajectory publisher (and, briefly, the rest)."""
        t = self.topics
        deadline = time.monotonic() + self.wait_s
        while time.monotonic() < deadline and not (self._camera.get_subscription_count()
                                                   and self._plan_sub.get_publisher_count()):
            self._spin(0.05)
        if not self._camera.get_subscription_count():
            raise PwmError(f"nothing subscribes to {self.camera_topic} after {self.wait_s:g} s: is the planner "
                           "running and active (pwm_node with use_sim_time:=true and autostart:=true)?")
        if not self._plan_sub.get_publisher_count():
            raise PwmError(f"nothing publishes {t.trajectory} after {self.wait_s:g} s: is the planner running and "
                           "active, and does it publish its nav_msgs/Path there?")
        settle = time.monotonic() + SETTLE_S
        while time.monotonic() < settle:  # the planner's other inputs, and its own view of our publishers
            self._spin(0.05)
        self._barrier = not self.realtime and self._params.wait_for_service(
            timeout_sec=min(5.0, max(SETTLE_S, deadline - time.monotonic())))
        missing = [topic for pub, topic in ((self._odom, t.odom), (self._command, t.command),
                                            (self._clock, CLOCK_TOPIC)) if not pub.get_subscription_count()]
        if missing:
            log.warning("nothing subscribes to %s: the planner does not read %s", ", ".join(missing),
                        "them" if len(missing) > 1 else "it")
        if not self.realtime and not self._barrier:
            log.warning("no %s/get_parameters service: odometry and the command may reach the planner after the "
                        "camera frame (name the planner node with --node)", t.node)
        self._connected = True

    def _on_plan(self, msg: Path) -> None:
        """Keep a plan that answers a frame of this drive; note its latency and, realtime, whether it came late."""
        now = time.monotonic()
        stamp_ns = conversions.stamp_to_ns(msg.header.stamp)
        sent = self._sent_s.get(stamp_ns)
        if sent is None:  # a frame of an earlier drive, or a Path not stamped with its camera frame's stamp
            self._stray_ns = stamp_ns
            return
        if stamp_ns in self._plans:  # an answer to a resent frame
            return
        self._plans[stamp_ns] = (msg, now)
        self.stats.latency_ms.append((now - sent) * 1e3)
        if self.realtime and self._wall_t0 is not None and now > self._wall(stamp_ns + self.period_ns):
            self.stats.late_plans += 1
        if len(self._plans) > 64:
            del self._plans[min(self._plans)]

    def _publish_clock(self, t_ns: int) -> None:
        self._clock_ns = t_ns
        self._clock.publish(Clock(clock=conversions.ns_to_stamp(t_ns)))

    def _odometry(self, t_ns: int, speed_mps: float, yaw_rate_radps: float, pose: tuple[float, float, float]
                  ) -> Odometry:
        msg = Odometry(header=Header(stamp=conversions.ns_to_stamp(t_ns), frame_id=WORLD_FRAME),
                       child_frame_id=EGO_FRAME)
        msg.pose.pose.position.x, msg.pose.pose.position.y = pose[0], pose[1]
        qx, qy, qz, qw = quat_from_yaw(pose[2])
        msg.pose.pose.orientation = Quaternion(x=qx, y=qy, z=qz, w=qw)
        msg.twist.twist.linear.x, msg.twist.twist.angular.z = speed_mps, yaw_rate_radps
        return msg

    def _publish_inputs(self, t_ns: int, ego: EgoInput, pose: tuple[float, float, float]) -> None:
        self._publish_clock(t_ns)
        speed, yaw_rate = float(ego.speed_mps), float(ego.yaw_rate_radps)
        baseline_ns = int(round(ACCEL_BASELINE_S * 1e9))
        if t_ns >= baseline_ns:  # the sample the acceleration is differenced against (module docstring)
            self._odom.publish(self._odometry(t_ns - baseline_ns, speed - float(ego.accel_mps2) * ACCEL_BASELINE_S,
                                              yaw_rate, pose))
        self._odom.publish(self._odometry(t_ns, speed, yaw_rate, pose))
        self._command.publish(UInt8(data=int(ego.command)))

    def _order_inputs(self) -> None:
        """Return once the planner node has taken the inputs published so far (its get_parameters answered)."""
        if not self._barrier:
            return
        future = self._params.call_async(GetParameters.Request(names=[]))
        deadline = time.monotonic() + self.timeout_s
        while not future.done() and time.monotonic() < deadline:
            self._spin()
        if not future.done():
            if hasattr(self._params, "remove_pending_request"):
                self._params.remove_pending_request(future)
            raise PwmError(f"{self.topics.node}/get_parameters did not answer within {self.timeout_s:g} s: is the "
                           "planner node still spinning?")

    def _publish_frame(self, t_ns: int, frame: Image | CompressedImage) -> None:
        self._sent_s[t_ns] = time.monotonic()
        if len(self._sent_s) > 64:
            del self._sent_s[min(self._sent_s)]
        self._camera.publish(frame)

    def _wait_plan(self, t_ns: int, frame: Image | CompressedImage) -> Path:
        start = time.monotonic()
        resend = start + RESEND_S
        while t_ns not in self._plans:
            now = time.monotonic()
            if now - start > self.timeout_s:
                older = [s for s in self._plans if s < t_ns]
                last = f" (its last plan answered the frame at {max(older) / 1e9:.3f} s)" if older else ""
                if self._stray_ns is not None:
                    last = (f" (a Path stamped {self._stray_ns / 1e9:.3f} s came, answering no frame sent: stamp "
                            "each Path with its camera frame's stamp)")
                raise PwmError(f"no nav_msgs/Path stamped {t_ns / 1e9:.3f} s on {self.topics.trajectory} within "
                               f"{self.timeout_s:g} s of that camera frame on {self.camera_topic}{last}: is the "
                               "planner active, with use_sim_time:=true?")
            if now > resend:
                self._camera.publish(frame)
                self.stats.resent_frames += 1
                resend = now + RESEND_S
            self._spin()
        return self._plans[t_ns][0]

    # --- realtime -----------------------------------------------------------------------------------
    def _wall(self, t_ns: int) -> float:
        assert self._wall_t0 is not None
        return self._wall_t0 + t_ns / 1e9 / self.rate

    def _run_until(self, wall_s: float, below_ns: int, until: Callable[[], bool] = lambda: False) -> None:
        """Spin until ``wall_s`` or ``until()``, publishing /clock as simulated time runs, but never up to
        ``below_ns`` (the next tick's stamp: the world may come late, and /clock must not go back)."""
        assert self._wall_t0 is not None
        next_clock = time.monotonic()
        while not until() and time.monotonic() < wall_s:
            now = time.monotonic()
            if now >= next_clock:
                sim_ns = min(int((now - self._wall_t0) * self.rate * 1e9), below_ns - 1)
                if sim_ns > self._clock_ns:
                    self._publish_clock(sim_ns)
                next_clock = now + CLOCK_PERIOD_S
            self._spin(min(SPIN_S, max(0.0, wall_s - time.monotonic())))

    def _step_realtime(self, t_ns: int, ego: EgoInput, pose: tuple[float, float, float],
                       frame: Image | CompressedImage) -> np.ndarray:
        if self._wall_t0 is None:
            self._wall_t0 = time.monotonic() - t_ns / 1e9 / self.rate
        self._run_until(self._wall(t_ns), t_ns)  # the world reaches this tick at its time
        self._publish_inputs(t_ns, ego, pose)
        self._publish_frame(t_ns, frame)
        self._run_until(self._wall(t_ns + self.period_ns), t_ns + self.period_ns, lambda: t_ns in self._plans)
        if t_ns in self._plans:
            self.stats.plans += 1
            return self._waypoints(self._plans[t_ns][0])
        self.stats.ticks_without_plan += 1
        usable = [s for s in self._plans if s in self._dr.poses and s < t_ns]
        if usable:  # the freshest plan so far (a late one is used from the first tick after it came)
            fresh = max(usable)
            return self._dr.moved(self._waypoints(self._plans[fresh][0]), self.waypoint_dt_s, fresh, t_ns)
        k = np.arange(1, self.num_waypoints + 1) * self.waypoint_dt_s  # no plan yet: straight on at this speed
        return np.column_stack([float(ego.speed_mps) * k, np.zeros_like(k), np.zeros_like(k)])

    # --- plans --------------------------------------------------------------------------------------
    def _waypoints(self, path: Path) -> np.ndarray:
        """(K, 3) x_m, y_m, yaw_rad of a plan, after the checks that make it one the world can drive."""
        topic, stamp_ns = self.topics.trajectory, conversions.stamp_to_ns(path.header.stamp)
        frames = {path.header.frame_id} | {p.header.frame_id for p in path.poses if p.header.frame_id}
        wrong = sorted(frames - {self.base_frame})
        if wrong:
            raise DataError(f"the plan on {topic} stamped {stamp_ns / 1e9:.3f} s is in frame {wrong[0]!r}, not "
                            f"{self.base_frame}: publish the nav_msgs/Path in the ego frame {self.base_frame}")
        if not path.poses:
            raise DataError(f"the plan on {topic} stamped {stamp_ns / 1e9:.3f} s has no poses")
        xyyaw, pose_t_ns = conversions.path_to_xyyaw(path)
        if len(pose_t_ns) > 1 and np.all(np.diff(pose_t_ns) > 0):
            dt_s = float(np.mean(np.diff(pose_t_ns))) / 1e9
            if abs(dt_s - self.waypoint_dt_s) > WAYPOINT_DT_TOLERANCE_S:
                raise DataError(f"the poses of the plan on {topic} are {dt_s:g} s apart, but the world tracks "
                                f"waypoints {self.waypoint_dt_s:g} s apart (the model's waypoint_dt_s)")
        return xyyaw
