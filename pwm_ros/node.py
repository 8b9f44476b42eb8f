"""``pwm_node``: the lifecycle node that turns camera frames into planned trajectories.

    ros2 launch pwm_ros pwm.launch.py model_dir:=/path/to/model        # configures and activates itself
    ros2 run pwm_ros pwm_node --ros-args -p model_dir:=/path/to/model -p autostart:=true

Transitions: configure loads and validates the model directory, builds the ``PolicyRunner`` and warms it up;
activate subscribes (camera, odometry, command) and starts the worker; deactivate stops both; cleanup frees the
engines. Each camera frame replaces the one waiting (latest frame only, drops counted); the worker plans at most
``planning_rate_hz`` times a second, skips frames older than ``max_frame_age_ms`` (or stamped that far ahead) and
never lets a bad frame, an engine exception or a NaN plan kill the node: it logs, counts, reports ERROR and recovers
on the next good frame.
"""

from __future__ import annotations

import math
import sys
import threading
import time
from collections import deque
from typing import Any

import numpy as np
import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from nav_msgs.msg import Odometry, Path
from rcl_interfaces.msg import ParameterDescriptor, SetParametersResult
from rclpy.clock import JumpThreshold
from rclpy.duration import Duration
from rclpy.lifecycle import LifecycleNode, LifecycleState, TransitionCallbackReturn
from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy, qos_policy_name_from_kind
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Float32, UInt8
from visualization_msgs.msg import MarkerArray

from pwm_model.errors import ConfigError, PwmError
from pwm_model.runtime.types import CommandAge, EgoInput, Plan
from pwm_ros import conversions, diagnostics, odometry, params
from pwm_ros.descriptors import descriptor
from pwm_ros.diagnostics import LOG_PERIOD_S, WARN_KINDS_MAX, LogLimiter, NodeStats, Thresholds, fault_kind
from pwm_ros.overlay import draw_path
from pwm_ros.worker import LatestFrameWorker

try:  # Iron and later
    from rclpy.event_handler import SubscriptionEventCallbacks
except ImportError:  # Humble
    from rclpy.qos_event import SubscriptionEventCallbacks

SUCCESS, FAILURE = TransitionCallbackReturn.SUCCESS, TransitionCallbackReturn.FAILURE
OUT_QOS = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)
IMAGE_OUT_QOS = QoSProfile(depth=1, reliability=ReliabilityPolicy.RELIABLE, durability=DurabilityPolicy.VOLATILE)


class PwmNode(LifecycleNode):
    """Camera -> ``PolicyRunner`` -> Path, markers, surprise, previews and diagnostics."""

    def __init__(self, **kwargs: Any) -> None:
        self._runner: Any = None  # PolicyRunner once configured
        self._worker: LatestFrameWorker | None = None
        self._subs: list[Any] = []
        self._pubs: dict[str, Any] = {}
        self._stats = NodeStats()
        self._lock = threading.Lock()  # guards odometry, command and reset requests
        self._odom: deque[odometry.Sample] = deque(maxlen=64)  # (t_ns, speed_mps, yaw_rate_radps)
        self._command = CommandAge()  # the route command and since when it stands
        self._reset_requested = False
        self._last_stamp_ns: int | None = None
        self._last_preview_s: dict[str, float] = {}
        self._warned: set[str] = set()
        self._log_limit = LogLimiter()  # faults logged again while they last: once a minute per kind
        self._camera_topic = ""
        super().__init__(params.NODE_NAME, **kwargs)
        for name, default in params.defaults().items():
            self.declare_parameter(name, default, descriptor(name, default))
        self.declare_parameter("autostart", False, ParameterDescriptor(
            description="configure and activate at start-up (for `ros2 run`; the launch file drives the "
                        "transitions itself)", read_only=True))
        self._keep_float_types()
        self._cfg, self._rt = params.split(self._values())
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diag_pub = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        self._diag_timer = self.create_timer(self._cfg.diagnostics_period_s, self._publish_diagnostics)
        # A backwards jump of ROS time (a looping bag with use_sim_time) resets the history.
        self._jump_handle = self.get_clock().create_jump_callback(
            JumpThreshold(min_forward=None, min_backward=Duration(nanoseconds=-1), on_clock_change=True),
            post_callback=self._on_clock_jump)

    # --- parameters ---------------------------------------------------------------------------------
    def _keep_float_types(self) -> None:
        """A float parameter given as an integer (``planning_rate_hz:=5``) stays a float (later sets: Iron+)."""
        fixed = [rclpy.parameter.Parameter(n, value=params.keep_float(n, self.get_parameter(n).value))
                 for n in params.SPECS if type(self.get_parameter(n).value) is int]
        if any(isinstance(p.value, float) for p in fixed):
            self.set_parameters([p for p in fixed if isinstance(p.value, float)])
        if hasattr(self, "add_pre_set_parameters_callback"):
            self.add_pre_set_parameters_callback(lambda changed: [
                p if params.keep_float(p.name, p.value) is p.value else
                rclpy.parameter.Parameter(p.name, value=params.keep_float(p.name, p.value)) for p in changed])

    def _values(self) -> dict[str, Any]:
        return {name: self.get_parameter(name).value for name in params.SPECS}

    def _on_set_parameters(self, changed: list[rclpy.parameter.Parameter]) -> SetParametersResult:
        values = self._values()
        for p in changed:
            if p.name not in params.SPECS:
                continue
            why = params.check_value(p.name, p.value)
            if why:
                return SetParametersResult(successful=False, reason=why)
            values[p.name] = p.value
        try:
            node, runtime = params.split(values)
        except ConfigError as exc:
            return SetParametersResult(successful=False, reason=str(exc))
        later = sorted(p.name for p in changed if p.name in params.SPECS and params.SPECS[p.name].applies != params.NOW)
        if later:
            self.get_logger().info(f"{', '.join(later)} changed: takes effect on the "
                                   f"{' / '.join(sorted({params.SPECS[n].applies for n in later}))}")
        period_changed = node.diagnostics_period_s != self._cfg.diagnostics_period_s
        # Values that apply now are read from these copies by the worker; the rest are re-read on transitions.
        self._cfg = params.merge_now(self._cfg, node)
        self._rt = params.merge_now(self._rt, runtime)
        if period_changed:
            self._diag_timer.cancel()
            self.destroy_timer(self._diag_timer)
            self._diag_timer = self.create_timer(node.diagnostics_period_s, self._publish_diagnostics)
        return SetParametersResult(successful=True)

    # --- lifecycle ----------------------------------------------------------------------------------
    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Load, validate and warm up the model -> inactive; any problem -> unconfigured (FAILURE) and ERROR."""
        try:
            self._cfg, self._rt = params.split(self._values())
            if not self._cfg.model_dir:
                raise ConfigError("parameter model_dir is empty: set it to a model directory "
                                  "(manifest.json + ONNX graphs), e.g. -p model_dir:=/path/to/model")
            self._stats.engine_state = "loading"
            self.get_logger().info(f"loading {self._cfg.model_dir} ({self._rt.backend}, "
                                   f"{self._rt.device})")
            from pwm_model.runtime.runner import PolicyRunner

            t0 = time.monotonic()
            runner = PolicyRunner.from_model_dir(self._cfg.model_dir, self._rt)
            try:
                runner.warm_up()
            except BaseException:
                runner.close()
                raise
        except Exception as exc:  # noqa: BLE001 - a failed configure leaves the node alive and unconfigured
            why = str(exc) if isinstance(exc, PwmError) else f"{type(exc).__name__}: {exc}"
            self._stats.engine_state = f"error: configure failed: {why}"
            self.get_logger().error(f"configure failed: {why}")
            return FAILURE
        self._runner = runner
        self.get_logger().info(diagnostics.surprise_threshold_note(runner.manifest, self._rt.surprise_warn))
        self._pubs = {
            "trajectory": self.create_lifecycle_publisher(Path, "~/trajectory", OUT_QOS),
            "surprise": self.create_lifecycle_publisher(Float32, "~/surprise", OUT_QOS),
            "markers": self.create_lifecycle_publisher(MarkerArray, "~/markers", OUT_QOS),
            "forecast": self.create_lifecycle_publisher(Image, "~/forecast/image", IMAGE_OUT_QOS),
            "overlay": self.create_lifecycle_publisher(Image, "~/overlay/image", IMAGE_OUT_QOS),
        }
        self._stats.engine_state = "ready"
        self.get_logger().info(f"model loaded and warmed up in {time.monotonic() - t0:.1f} s")
        return SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Subscribe and start the worker -> active."""
        self._cfg, self._rt = params.split(self._values())
        self._stats.reset()
        self._last_stamp_ns, self._reset_requested = None, True
        self._last_preview_s.clear()
        with self._lock:
            self._odom.clear()
            self._command.reset()
        ret = super().on_activate(state)  # enables the lifecycle publishers
        self._worker = LatestFrameWorker(self._cycle, lambda: 1.0 / self._rt.planning_rate_hz,
                                         self._on_worker_error)
        self._worker.start()
        self._subscribe()
        self._stats.engine_state = "active"
        return ret

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Unsubscribe and stop the worker -> inactive."""
        self._unsubscribe()
        self._stop_worker()
        self._stats.engine_state = "ready"
        return super().on_deactivate(state)

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Destroy the publishers and free the engines -> unconfigured."""
        self._release()
        return SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Stop everything -> finalized."""
        self._release()
        self._stats.engine_state = "finalized"
        return SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        """Free everything and go back to unconfigured."""
        self._release()
        return SUCCESS

    def destroy_node(self) -> None:
        self._release()
        super().destroy_node()

    def _release(self) -> None:
        self._unsubscribe()
        self._stop_worker()
        for pub in self._pubs.values():
            destroy = getattr(self, "destroy_lifecycle_publisher", self.destroy_publisher)
            destroy(pub)
        self._pubs = {}
        if self._runner is not None:
            runner, self._runner = self._runner, None
            runner.close()
        if not self._stats.engine_state.startswith("error"):
            self._stats.engine_state = "unconfigured"

    def _stop_worker(self) -> None:
        if self._worker is not None:
            if not self._worker.stop(timeout_s=30.0):
                self.get_logger().error("the planning worker did not stop within 30 s")
            self._worker = None

    # --- subscriptions ------------------------------------------------------------------------------
    def _subscribe(self) -> None:
        n = self._cfg
        self._camera_topic = params.camera_subscription_topic(n)
        reliability = ReliabilityPolicy.RELIABLE if n.camera_reliability == "reliable" else \
            ReliabilityPolicy.BEST_EFFORT
        camera_qos = QoSProfile(depth=n.camera_depth, history=HistoryPolicy.KEEP_LAST, reliability=reliability,
                                durability=DurabilityPolicy.VOLATILE)
        msg_type = CompressedImage if n.use_compressed else Image
        self._subs.append(self.create_subscription(
            msg_type, self._camera_topic, self._on_image, camera_qos,
            event_callbacks=self._qos_events(self._camera_topic, "camera")))
        if n.odom_topic:
            odom_qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.BEST_EFFORT)  # matches any publisher
            self._subs.append(self.create_subscription(Odometry, n.odom_topic, self._on_odom, odom_qos,
                                                       event_callbacks=self._qos_events(n.odom_topic, "odometry")))
        if n.command_topic:
            self._subs.append(self.create_subscription(UInt8, n.command_topic, self._on_command, OUT_QOS,
                                                       event_callbacks=self._qos_events(n.command_topic, "command")))
        self.get_logger().info(f"active: {msg_type.__name__} on {self._camera_topic} "
                               f"({n.camera_reliability}, depth {n.camera_depth}); planning at most "
                               f"{self._rt.planning_rate_hz:g} Hz")

    def _unsubscribe(self) -> None:
        for sub in self._subs:
            self.destroy_subscription(sub)
        self._subs = []

    def _qos_events(self, topic: str, what: str) -> SubscriptionEventCallbacks:
        def incompatible(info: Any) -> None:
            policy = qos_policy_name_from_kind(info.last_policy_kind)
            self._stats.count("qos_incompatible")  # said once per input and policy: a flapping publisher is no storm
            if policy == "RELIABILITY" and what == "camera":
                remedy = "the publisher is best effort: set camera_reliability:=best_effort"
            elif policy == "RELIABILITY":
                remedy = "the publisher is best effort: publish it reliable"
            elif policy == "DURABILITY":
                remedy = "the publisher is volatile: this subscription must be volatile too"
            else:
                remedy = f"compare both ends with `ros2 topic info -v {topic}`"
            self._warn_once(f"qos {what} {policy}", f"{what} publisher on {topic} has an incompatible {policy} QoS "
                            f"(total {info.total_count}): {remedy}")
        return SubscriptionEventCallbacks(incompatible_qos=incompatible)

    def _on_image(self, msg: Image | CompressedImage) -> None:
        now_s = time.monotonic()
        worker = self._worker
        if worker is None:
            return
        lost = self._stats.frame_received(now_s, worker.submit((msg, now_s)), conversions.stamp_to_ns(msg.header.stamp))
        if lost is not None:  # frames missing by the camera's stamps: said once, counted in /diagnostics
            n = self._cfg
            self._warn_once("camera frames missing", diagnostics.missing_frames_advice(
                *lost, self._camera_topic, n.camera_reliability, n.use_compressed))

    def _on_odom(self, msg: Odometry) -> None:
        t_ns, speed, yaw_rate = conversions.odometry_twist(msg)
        now_ns = self.get_clock().now().nanoseconds  # 0: sim time before the first /clock, no stamp check
        fault = odometry.implausible(speed, yaw_rate, self._cfg.odom_topic, (t_ns - now_ns) / 1e9 if now_ns else 0.0,
                                     self._cfg.odom_timeout_s)
        if fault is not None:
            self._stats.count("bad_odometry")
            self._warn_once(*fault)
            return
        with self._lock:
            if self._odom and t_ns < self._odom[-1][0]:
                self._odom.clear()  # odometry time went backwards
            self._odom.append((t_ns, speed, yaw_rate))

    def _on_command(self, msg: UInt8) -> None:
        if int(msg.data) > 2:
            self._stats.count("bad_commands")
            self._warn_once("bad command", f"route command {msg.data} on {self._cfg.command_topic} is "
                                                   "not 0 (left), 1 (straight) or 2 (right): ignored")
            return
        with self._lock:
            self._command.see(int(msg.data))

    def _on_clock_jump(self, jump: Any) -> None:
        if jump.delta.nanoseconds < 0:
            with self._lock:
                self._reset_requested = True

    # --- the planning cycle (worker thread) ---------------------------------------------------------
    def _ego(self, stamp_ns: int) -> tuple[EgoInput, float]:
        """Ego input at the camera stamp and the odometry age in ms (NaN without odometry)."""
        with self._lock:
            command = self._cfg.default_command if self._command.value is None else self._command.value
            age_s, odom = self._command.age_s(stamp_ns), list(self._odom)
        return odometry.ego_at(odom, stamp_ns, command, self._cfg.odom_timeout_s, age_s)

    def _cycle(self, item: tuple[Image | CompressedImage, float]) -> None:
        msg, received_s = item
        runner = self._runner
        if runner is None:
            return
        t0 = time.monotonic()
        stamp_ns = conversions.stamp_to_ns(msg.header.stamp)
        age_ms = (self.get_clock().now().nanoseconds - stamp_ns) / 1e6
        if abs(age_ms) > self._rt.max_frame_age_ms:  # checked first: one bad stamp must not reset the history
            self._stats.count("stale_frames" if age_ms > 0 else "future_frames")
            limit = f"(max_frame_age_ms {self._rt.max_frame_age_ms:g})"
            if age_ms > 0:  # two call sites: each kind is throttled on its own
                self.get_logger().warning(f"frame {age_ms:.0f} ms old skipped {limit}",
                                          throttle_duration_sec=LOG_PERIOD_S)
            else:
                self.get_logger().warning(f"frame stamped {-age_ms:.0f} ms in the future skipped {limit}: is the "
                                          "camera clock ahead of this node's?", throttle_duration_sec=LOG_PERIOD_S)
            return
        with self._lock:
            reset, self._reset_requested = self._reset_requested, False
        if self._last_stamp_ns is not None and stamp_ns < self._last_stamp_ns:
            self._stats.count("time_jumps")
            self.get_logger().warning(f"camera stamp went back by {(self._last_stamp_ns - stamp_ns) / 1e9:.3f} s "
                                      "(bag loop or clock reset): history reset", throttle_duration_sec=LOG_PERIOD_S)
            reset = True
        if reset:
            runner.reset()
            self._last_stamp_ns = None
        if self._last_stamp_ns is not None and stamp_ns == self._last_stamp_ns:
            self._stats.count("duplicate_frames")
            return
        try:
            rgb = conversions.compressed_to_rgb(msg) if isinstance(msg, CompressedImage) else \
                conversions.image_to_rgb(msg)
        except PwmError as exc:
            self._stats.fault("bad_frames", f"bad frame: {exc}", time.monotonic())
            self._warn_once(fault_kind(exc), f"bad camera frame skipped: {exc}")
            return
        note = runner.fit_note(rgb.shape[:2])  # the contract's aspect rule: a centre crop, never a squash
        if note is not None:
            self._stats.count("cropped_frames")
            self._warn_once("camera aspect", note)
        ego, odom_age_ms = self._ego(stamp_ns)
        t_run = time.monotonic()
        try:
            plan: Plan = runner.step(rgb, stamp_ns, ego)
        except Exception as exc:  # noqa: BLE001 - an engine failure must not kill the node
            self._fault("engine_errors", f"engine failed: {type(exc).__name__}: {exc}")
            return
        runner_ms = (time.monotonic() - t_run) * 1e3
        if not np.all(np.isfinite(plan.waypoints_xyyaw)):
            self._fault("nan_plans", "the engine returned non-finite waypoints: plan not published")
            return
        self._last_stamp_ns = stamp_ns
        frame = self._cfg.base_frame
        self._pubs["trajectory"].publish(conversions.plan_to_path(plan, frame))
        if math.isfinite(plan.surprise):
            self._pubs["surprise"].publish(Float32(data=float(plan.surprise)))
        if self._pubs["markers"].get_subscription_count():
            self._pubs["markers"].publish(conversions.plan_to_markers(plan, frame))
        done_s = time.monotonic()
        latency_ms = (self.get_clock().now().nanoseconds - stamp_ns) / 1e6
        self._stats.planned(done_s, latency_ms, (done_s - t0) * 1e3, runner_ms, age_ms, plan.surprise,
                            plan.warming_up, odom_age_ms, novelty=plan.novelty)
        self._publish_previews(runner, plan, rgb, msg.header.frame_id)

    def _fault(self, counter: str, message: str) -> None:
        self._stats.fault(counter, message, time.monotonic())
        if self._log_limit.due(counter, time.monotonic()):
            self.get_logger().error(message)
        try:
            self._runner.reset()  # start the history afresh from the next good frame
        except Exception as exc:  # noqa: BLE001
            self.get_logger().error(f"history reset failed: {exc}", throttle_duration_sec=LOG_PERIOD_S)
        self._last_stamp_ns = None

    def _preview_due(self, name: str) -> bool:
        pub = self._pubs.get(name)
        if pub is None or pub.get_subscription_count() == 0:
            return False
        now_s = time.monotonic()
        if now_s - self._last_preview_s.get(name, -math.inf) < 1.0 / self._rt.preview_rate_hz:
            return False
        self._last_preview_s[name] = now_s
        return True

    def _publish_previews(self, runner: Any, plan: Plan, rgb: np.ndarray, camera_frame: str) -> None:
        try:
            if self._preview_due("forecast") and len(plan.forecast_tokens):
                tiles = runner.preview(plan)
                self._pubs["forecast"].publish(conversions.rgb_to_image(tiles, plan.t_ns, camera_frame))
                self._stats.count("previews_published")
            if self._preview_due("overlay"):
                img = draw_path(rgb, runner.camera, plan.waypoints_xyyaw)
                self._pubs["overlay"].publish(conversions.rgb_to_image(img, plan.t_ns, camera_frame))
                self._stats.count("previews_published")
        except Exception as exc:  # noqa: BLE001 - previews are optional
            self.get_logger().warning(f"preview failed: {type(exc).__name__}: {exc}",
                                      throttle_duration_sec=LOG_PERIOD_S)

    def _on_worker_error(self, exc: BaseException) -> None:
        if not self.context.ok():  # shutting down (Ctrl-C) while a cycle was publishing: nothing to report
            return
        self._stats.fault("engine_errors", f"planning cycle failed: {type(exc).__name__}: {exc}", time.monotonic())
        self.get_logger().error(f"planning cycle failed: {type(exc).__name__}: {exc}",
                                throttle_duration_sec=LOG_PERIOD_S)

    def _warn_once(self, kind: str, message: str) -> None:
        """Log ``message`` the first time a fault of this ``kind`` occurs (at most ``WARN_KINDS_MAX`` kinds)."""
        with self._lock:  # callbacks, the worker and the timer all warn
            new = kind not in self._warned and len(self._warned) < WARN_KINDS_MAX
            if new:
                self._warned.add(kind)
        if new:
            self.get_logger().warning(message + " (said once for faults of this kind; counted in /diagnostics)")

    # --- diagnostics --------------------------------------------------------------------------------
    def _check_camera_types(self) -> None:
        """Publishers of another message type on the camera topic deliver nothing: count them and say the remedy."""
        if self._worker is None or not self._camera_topic:
            return
        want = "sensor_msgs/msg/CompressedImage" if self._cfg.use_compressed else "sensor_msgs/msg/Image"
        full = self.resolve_topic_name(self._camera_topic)
        others = sorted({info.topic_type for info in self.get_publishers_info_by_topic(full)} - {want})
        if others:
            self._stats.count("camera_type_mismatch")
            self._warn_once(f"camera type {others}", f"{full} carries {', '.join(others)}, but pwm_node subscribes "
                            f"to {want} there: point camera_topic at the camera's image topic (or set "
                            "use_compressed for sensor_msgs/CompressedImage)")

    def _publish_diagnostics(self) -> None:
        self._check_camera_types()
        n = self._cfg
        th = Thresholds(planning_rate_hz=self._rt.planning_rate_hz, camera_timeout_s=n.camera_timeout_s,
                        surprise_warn=None if self._runner is None else self._runner.manifest.surprise_warn(
                            self._rt.surprise_warn), odom_expected=bool(n.odom_topic),
                        novelty_warn=None if self._runner is None else self._runner.manifest.novelty_warn(
                            self._rt.novelty_warn),
                        odom_timeout_s=n.odom_timeout_s)
        level, message, values = self._stats.summary(time.monotonic(), self._worker is not None, th,
                                                     self._camera_topic or params.camera_subscription_topic(n))
        values = {"backend": self._rt.backend, "device": self._rt.device, "model_dir": n.model_dir,
                  "camera_topic": self._camera_topic, **values}
        name = f"{self.get_fully_qualified_name().lstrip('/')}: planner"
        self._diag_pub.publish(conversions.diagnostic_array(self.get_clock().now().nanoseconds, name,
                                                            f"{self._rt.backend}/{self._rt.device}",
                                                            level, message, values))


def main(args: list[str] | None = None) -> int:
    """``pwm_node``: spin the lifecycle node until Ctrl-C or shutdown."""
    rclpy.init(args=args)
    node: PwmNode | None = None
    try:
        node = PwmNode()
        if node.get_parameter("autostart").value:
            node.trigger_configure()
            if node._stats.engine_state == "ready":  # noqa: SLF001 - configure succeeded
                node.trigger_activate()
        rclpy.spin(node)
    except KeyboardInterrupt:
        pass
    except (PwmError, rclpy.exceptions.InvalidParameterValueException,
            rclpy.exceptions.InvalidParameterTypeException) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        if type(exc).__name__ != "ExternalShutdownException":
            raise
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
