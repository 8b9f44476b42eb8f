"""The latest-frame worker, the diagnostics aggregation and the odometry -> ego input (plain Python, no ROS graph)."""

from __future__ import annotations

import threading
import time

import pytest

from pwm_ros.diagnostics import ERROR, OK, WARN, LogLimiter, NodeStats, RateMeter, Thresholds, percentile
from pwm_ros.odometry import ego_at, implausible
from pwm_ros.worker import LatestFrameWorker


def _wait(cond, timeout_s: float = 5.0) -> bool:  # noqa: ANN001
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.005)
    return cond()


def test_worker_takes_only_the_newest_frame_and_reports_drops() -> None:
    gate = threading.Event()
    done: list[int] = []

    def process(i: int) -> None:
        gate.wait(5)
        done.append(i)

    w = LatestFrameWorker(process, lambda: 0.0, lambda exc: None)
    w.start()
    try:
        assert w.submit(0) is False
        assert _wait(lambda: not w.idle() and w._has_item is False)  # noqa: SLF001 - item 0 taken, cycle running
        replaced = [w.submit(i) for i in range(1, 6)]  # the camera keeps going while the engine is busy
        assert replaced == [False, True, True, True, True]  # 1..4 dropped, counted by the caller
        gate.set()
        assert _wait(lambda: w.idle() and len(done) == 2)
        assert done == [0, 5]  # never queued behind the camera
    finally:
        assert w.stop()


def test_worker_rate_limit_keeps_the_frame_waiting_and_takes_the_newest() -> None:
    period = [3600.0]
    done: list[int] = []
    w = LatestFrameWorker(done.append, lambda: period[0], lambda exc: None)
    w.start()
    try:
        w.submit(1)
        assert _wait(lambda: done == [1])
        w.submit(2)
        time.sleep(0.2)
        assert done == [1] and not w.idle()  # held back by planning_rate_hz
        period[0] = 0.0
        w.submit(3)  # wakes the worker, which now takes the newest frame
        assert _wait(lambda: done == [1, 3])
    finally:
        assert w.stop()


def test_worker_survives_exceptions() -> None:
    errors: list[BaseException] = []
    done: list[int] = []

    def process(i: int) -> None:
        if i < 0:
            raise RuntimeError("engine exploded")
        done.append(i)

    w = LatestFrameWorker(process, lambda: 0.0, errors.append)
    w.start()
    try:
        w.submit(-1)
        assert _wait(lambda: len(errors) == 1)
        w.submit(7)
        assert _wait(lambda: done == [7])
        assert isinstance(errors[0], RuntimeError) and w.running
    finally:
        assert w.stop()
    assert not w.running


def test_percentile_and_rate() -> None:
    assert percentile([], 50) != percentile([], 50)  # NaN
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == pytest.approx(2.5)
    assert percentile(list(range(101)), 99) == pytest.approx(99.0)
    meter = RateMeter(window_s=5.0)
    for k in range(11):
        meter.tick(100.0 + 0.1 * k)
    assert meter.rate_hz(101.0) == pytest.approx(10.0)
    assert meter.rate_hz(104.0) < 4.0  # events stopped: the rate decays
    assert meter.rate_hz(200.0) == 0.0


def test_stats_levels_mean_something() -> None:
    stats = NodeStats()
    th = Thresholds(planning_rate_hz=10.0, camera_timeout_s=1.0, surprise_warn=0.5)
    stats.engine_state = "ready"
    level, msg, _ = stats.summary(0.0, active=False, th=th)
    assert level == WARN and "not active" in msg
    stats.engine_state = "active"
    stats.reset()
    t0 = stats.active_since_s
    for k in range(20):
        stats.frame_received(t0 + 0.1 * k, replaced=k % 3 == 0)
        stats.planned(t0 + 0.1 * k + 0.05, latency_ms=40.0 + k, cycle_ms=30.0, runner_ms=27.0, frame_age_ms=5.0,
                      surprise=0.1, warming_up=False, odom_age_ms=float("nan"))
    level, msg, values = stats.summary(t0 + 2.0, active=True, th=th, camera_topic="/cam")
    assert level == OK, msg
    assert values["dropped_frames"] == 7 and values["frames_planned"] == 20
    assert values["latency_p50_ms"] == pytest.approx(49.5)
    assert values["overhead_frac"] == pytest.approx(0.1)
    stats.fault("bad_frames", "bad frame: image has zero size", t0 + 2.1)
    level, msg, values = stats.summary(t0 + 2.2, active=True, th=th, camera_topic="/cam")
    assert level == ERROR and "zero size" in msg and values["bad_frames"] == 1
    stats.planned(t0 + 2.3, 40.0, 30.0, 27.0, 5.0, 0.9, False, float("nan"))  # the next good plan recovers
    level, msg, _ = stats.summary(t0 + 2.4, active=True, th=th, camera_topic="/cam")
    assert level == WARN and "surprise" in msg  # 0.9 > surprise_warn
    uncalibrated = Thresholds(planning_rate_hz=10.0, camera_timeout_s=1.0, surprise_warn=None)
    level, msg, _ = stats.summary(t0 + 2.4, active=True, th=uncalibrated, camera_topic="/cam")
    assert level == OK and "surprise" not in msg  # no threshold (a model without a calibration): no surprise WARN
    stats.planned(t0 + 2.5, 40.0, 30.0, 27.0, 5.0, 0.1, False, float("nan"), novelty=9.0)
    novel = Thresholds(planning_rate_hz=10.0, camera_timeout_s=1.0, novelty_warn=6.0)
    level, msg, values = stats.summary(t0 + 2.6, active=True, th=novel, camera_topic="/cam")
    assert level == WARN and "unlike the training drives" in msg and values["novelty"] == 9.0
    level, msg, _ = stats.summary(t0 + 2.6, active=True, th=uncalibrated, camera_topic="/cam")
    assert level == OK  # a model without a novelty calibration: no novelty WARN
    level, msg, _ = stats.summary(t0 + 10.0, active=True, th=th, camera_topic="/cam")
    assert level == WARN and "no camera frame on /cam" in msg
    stats.count("stale_frames", 3)
    _, msg, _ = stats.summary(t0 + 10.1, active=True, th=th)
    assert "3 frames older than max_frame_age_ms" in msg
    _, msg, _ = stats.summary(t0 + 10.2, active=True, th=th)
    assert "older than" not in msg  # reported per period, counted for ever
    stats.engine_state = "error: configure failed: no manifest.json"
    assert stats.summary(t0 + 11.0, active=False, th=th)[0] == ERROR


def test_odometry_gives_speed_acceleration_and_yaw_rate_and_refuses_implausible_ones() -> None:
    assert implausible(69.0, -2.9, "/odom") is None and implausible(-70.0, 3.0, "/odom") is None
    for speed in (70.5, float("nan"), float("-inf")):
        kind, message = implausible(speed, 0.0, "/odom")
        assert kind == "bad odometry" and "odometry speed" in message and "/odom" in message
    for yaw_rate in (3.5, -10.0, float("nan"), float("inf")):
        kind, message = implausible(5.0, yaw_rate, "/odom")
        assert kind == "bad odometry yaw rate" and "within 3 rad/s: ignored" in message
    assert implausible(5.0, 0.1, "/odom", ahead_s=0.5, max_ahead_s=0.5) is None  # up to odom_timeout_s ahead
    kind, message = implausible(5.0, 0.1, "/odom", ahead_s=86_400.0, max_ahead_s=0.5)
    assert kind == "bad odometry stamp" and "86400.000 s ahead of this node's clock" in message
    ego, age_ms = ego_at([], 1_000_000_000, 2, 0.5)
    assert (ego.speed_mps, ego.yaw_rate_radps, ego.command) == (0.0, 0.0, 2) and age_ms != age_ms  # NaN
    odom = [(0, 5.0, 0.1), (50_000_000, 5.5, 0.2), (200_000_000, 6.0, 0.3)]
    ego, age_ms = ego_at(odom, 300_000_000, 1, 0.5)
    assert ego.speed_mps == 6.0 and ego.yaw_rate_radps == 0.3 and age_ms == 100.0
    assert ego.accel_mps2 == pytest.approx(0.5 / 0.15)  # differenced to the newest sample at least 0.1 s older
    ego, age_ms = ego_at(odom, 900_000_000, 1, 0.5)  # older than odom_timeout_s: no motion
    assert (ego.speed_mps, ego.accel_mps2, ego.yaw_rate_radps) == (0.0, 0.0, 0.0) and age_ms == 700.0


def test_the_log_limiter_says_each_kind_at_most_once_a_period() -> None:
    limit = LogLimiter(period_s=60.0)
    assert limit.due("engine_errors", 100.0) and limit.due("nan_plans", 100.5)  # kinds apart, not call sites
    assert not limit.due("engine_errors", 159.9) and not limit.due("nan_plans", 101.0)
    assert limit.due("engine_errors", 160.0) and not limit.due("engine_errors", 161.0)
